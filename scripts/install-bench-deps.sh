#!/usr/bin/env bash
# Installs what the benchmarks need beyond scripts/install-deps.sh, as
# root, on Debian 12: Podman, the peer bench/checkpoint compares godwit's
# checkpoint and restore with. Idempotent: a second run checks, changes
# nothing and takes seconds.
#
# Debian 12's podman 4.3.1 is enough: it checkpoints and restores with the
# runc 1.3.6 and CRIU 4.2.1 that install-deps.sh takes from unstable, and
# its CNI bridge networking works here. Unstable's podman 5 is not used: on
# Debian 12 it would upgrade systemd and OpenSSL and remove libssl3 and
# Python 3.11 packages. Recommends are left out (buildah, fuse-overlayfs,
# slirp4netns: rootless Podman, which the benchmark does not use).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
pkgs=(podman conmon containernetworking-plugins golang-github-containers-common)

log() { echo "install-bench-deps: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs apt packages); try: sudo $0"
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# criu and runc first: podman would otherwise pull Debian 12's runc, and
# the unstable source they need must be set up before anything else.
"$repo/scripts/install-deps.sh"

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing from Debian 12: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "ok: podman $(podman version --format '{{.Client.Version}}'), $(runc --version | head -1)"
