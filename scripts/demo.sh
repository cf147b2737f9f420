#!/usr/bin/env bash
# The main job, end to end: two agents on this machine, serving mutual TLS
# with certificates of a throwaway CA, a busybox image
# imported, a container running with its own IP, live-migrated from n1 to
# n2 and back with its memory (a shell counter) and IP, then checkpointed
# into an encrypted archive and inspected, and removed with nothing left
# behind. Run as root after `make build` (`make demo` does both).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
godwit=${GODWIT_BIN:-$repo/bin/godwit} # the tests run it with the binary under test
work=$(mktemp -d /tmp/godwit-demo.XXXXXX)
port=${GODWIT_DEMO_PORT:-7701}
addr=127.0.0.1:$port
addr2=127.0.0.1:$((port + 1))
export GODWIT_AGENT=$addr

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  "$godwit" rm -f c1 >/dev/null 2>&1 || true
  "$godwit" --agent "$addr2" rm -f c1 >/dev/null 2>&1 || true
  for pid in ${agent_pid:-} ${agent2_pid:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it runs containers)" >&2; exit 1; }

step "godwit doctor"
"$godwit" doctor || true

step "godwit tls: a throwaway CA, a certificate for each node and one for this CLI"
"$godwit" tls ca create --dir "$work/tls"
for node in n1 n2; do "$godwit" tls cert create --dir "$work/tls" --role agent --name "$node" --host 127.0.0.1; done
"$godwit" tls cert create --dir "$work/tls" --role operator --name operator
# The CLI presents the operator's certificate to both agents.
export GODWIT_TLS_CA=$work/tls/operator/ca.pem GODWIT_TLS_CERT=$work/tls/operator/cert.pem GODWIT_TLS_KEY=$work/tls/operator/key.pem
tls_flags() { echo --tls-ca "$work/tls/$1/ca.pem" --tls-cert "$work/tls/$1/cert.pem" --tls-key "$work/tls/$1/key.pem"; }

step "start two agents over mutual TLS: nodes n1 and n2, data in $work/n1 and $work/n2"
# shellcheck disable=SC2046 # tls_flags' words are the flags
"$godwit" agent --name n1 --data-dir "$work/n1" --listen "$addr" $(tls_flags n1) 2>"$work/n1.log" &
agent_pid=$!
# shellcheck disable=SC2046
"$godwit" agent --name n2 --data-dir "$work/n2" --listen "$addr2" $(tls_flags n2) 2>"$work/n2.log" &
agent2_pid=$!
for _ in $(seq 100); do "$godwit" ps >/dev/null 2>&1 && "$godwit" --agent "$addr2" ps >/dev/null 2>&1 && break; sleep 0.1; done

step "without the certificates the CLI is refused, and told what to pass"
GODWIT_TLS_CA= GODWIT_TLS_CERT= GODWIT_TLS_KEY= "$godwit" ps || true

step "build a busybox root filesystem tarball"
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh date sleep cat wc; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

step "godwit image import busybox.tar --name busybox (on both nodes)"
"$godwit" image import "$work/busybox.tar" --name busybox
"$godwit" --agent "$addr2" image import "$work/busybox.tar" --name busybox
"$godwit" image ls

step "godwit run --name c1 busybox: a counter kept in the shell's memory"
"$godwit" run --name c1 --memory 64m busybox -- sh -c 'i=0; while true; do i=$((i+1)); echo "count $i"; echo $i > /tmp/count; sleep 1; done'
"$godwit" ps
"$godwit" ps -o json

step "it keeps counting"
sleep 3
"$godwit" exec c1 -- cat /tmp/count

step "godwit migrate c1 --from-agent n1 --to-agent n2: live migration, same IP, counter continues"
"$godwit" migrate c1 --from-agent "$addr" --to-agent "$addr2" --journal "$work/journal"
"$godwit" --agent "$addr2" ps
sleep 2
"$godwit" --agent "$addr2" logs c1 | tail -n 3

step "and back: godwit migrate c1 --from-agent n2 --to-agent n1 -o json"
"$godwit" migrate c1 --from-agent "$addr2" --to-agent "$addr" --journal "$work/journal" -o json
"$godwit" ps

step "godwit checkpoint c1 --leave-running --export c1.gwc --encrypt-key key, then inspect it"
"$godwit" checkpoint keygen "$work/key"
"$godwit" checkpoint c1 --leave-running --export "$work/c1.gwc" --encrypt-key "$work/key"
"$godwit" checkpoint inspect "$work/c1.gwc" --decrypt-key "$work/key"

step "godwit rm -f c1: nothing left behind on either node"
"$godwit" rm -f c1
"$godwit" ps -a
"$godwit" --agent "$addr2" ps -a
echo "demo done"
