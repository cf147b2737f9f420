#!/usr/bin/env bash
# Installs what godwit needs to build and to run its tests, as root, on
# Debian 12. Idempotent: a second run checks, changes nothing and takes
# seconds.
#
# CRIU and runc come from Debian unstable: this kernel needs CRIU >= 4.2
# (Debian 12's 3.17 cannot start, 4.1 cannot dump sockets on kernels from
# 6.16). The unstable source is pinned at priority 100 so nothing else is
# taken from it unless criu or runc depend on it. Debian 12 packages are
# installed first: after the unstable step, some of them no longer resolve.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools="$repo/.tools/bin"

# Pinned Go tools: protoc plugins whose output is committed, so CI can tell
# when generated code is stale.
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2

stable_pkgs=(iptables iproute2 btrfs-progs busybox-static protobuf-compiler libprotobuf-dev util-linux e2fsprogs kmod)
unstable_pkgs=(criu runc)
min_criu=40200

log() { echo "install-deps: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs apt packages); try: sudo $0"
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

missing() {
  local out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

criu_version_ok() {
  command -v criu >/dev/null || return 1
  local v
  v=$(criu --version 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$v" ] || return 1
  local a b c
  IFS=. read -r a b c <<<"$v"
  [ $((a * 10000 + b * 100 + ${c:-0})) -ge "$min_criu" ]
}

updated=0
apt_update() {
  if [ "$updated" -eq 0 ]; then
    apt-get update -qq
    updated=1
  fi
}

need=$(missing "${stable_pkgs[@]}")
if [ -n "$need" ]; then
  log "installing from Debian 12: $need"
  apt_update
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

src=/etc/apt/sources.list.d/godwit-unstable.sources
pref=/etc/apt/preferences.d/godwit-unstable
if [ ! -f "$src" ] || [ ! -f "$pref" ]; then
  log "adding Debian unstable, pinned at priority 100"
  cat >"$src" <<'SRC'
# Added by godwit's scripts/install-deps.sh for criu and runc only.
Types: deb
URIs: http://deb.debian.org/debian
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
Check-Valid-Until: no
SRC
  cat >"$pref" <<'PREF'
# Added by godwit's scripts/install-deps.sh: take nothing from unstable
# unless asked for by name (-t unstable) or needed by such a package.
Package: *
Pin: release a=unstable
Pin-Priority: 100
PREF
  updated=0
fi

if ! criu_version_ok || [ -n "$(missing "${unstable_pkgs[@]}")" ]; then
  log "installing criu and runc from unstable"
  apt_update
  apt-get install -y -qq -t unstable --no-install-recommends "${unstable_pkgs[@]}" >/dev/null
  criu_version_ok || { log "criu $(criu --version | head -1) is older than 4.2"; exit 1; }
fi

# Go tools, pinned, installed into the repository (not on the system PATH).
export PATH="/usr/local/go/bin:$PATH"
stamp="$repo/.tools/versions"
want="$PROTOC_GEN_GO $PROTOC_GEN_GO_GRPC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$tools/protoc-gen-go" ] || [ ! -x "$tools/protoc-gen-go-grpc" ]; then
  log "installing Go tools: $want"
  mkdir -p "$tools"
  GOBIN="$tools" go install "$PROTOC_GEN_GO"
  GOBIN="$tools" go install "$PROTOC_GEN_GO_GRPC"
  echo "$want" >"$stamp"
fi

log "ok: $(criu --version | awk '/^Version:/ {print "criu " $2}'), $(runc --version | head -1)"
