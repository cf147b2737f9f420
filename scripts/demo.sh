#!/usr/bin/env bash
# The quick start from the README, end to end: an agent on this machine,
# a busybox image imported, a container running with its own IP, then
# removed with nothing left behind. Run as root after `make build`
# (`make demo` does both).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
godwit="$repo/bin/godwit"
work=$(mktemp -d /tmp/godwit-demo.XXXXXX)
addr=127.0.0.1:${GODWIT_DEMO_PORT:-7701}
export GODWIT_AGENT=$addr

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  "$godwit" rm -f c1 >/dev/null 2>&1 || true
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it runs containers)" >&2; exit 1; }

step "godwit doctor"
"$godwit" doctor || true

step "start an agent: node n1, data in $work/n1"
"$godwit" agent --name n1 --data-dir "$work/n1" --listen "$addr" --insecure 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do "$godwit" ps >/dev/null 2>&1 && break; sleep 0.1; done

step "build a busybox root filesystem tarball"
mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh date sleep cat wc; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

step "godwit image import busybox.tar --name busybox"
"$godwit" image import "$work/busybox.tar" --name busybox
"$godwit" image ls

step "godwit run --name c1 busybox -- sh -c 'while true; do date >> /tmp/t; sleep 1; done'"
"$godwit" run --name c1 --memory 64m busybox -- sh -c 'while true; do date >> /tmp/t; sleep 1; done'
"$godwit" ps
"$godwit" ps -o json

step "it keeps writing /tmp/t"
sleep 2
"$godwit" exec c1 -- wc -l /tmp/t

step "godwit rm -f c1: nothing left behind"
"$godwit" rm -f c1
"$godwit" ps -a
echo "demo done"
