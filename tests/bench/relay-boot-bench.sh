#!/bin/bash
# The relay's shared read cache with real VMs (issue 13): BENCH_VMS (8)
# VMs on one hypervisor boot one vDisk at once through `streamsvc --relay`
# (cache mode hypervisor: each VM's qcow2 overlay is backed by its own
# device export on the relay's socket; the relay reads from one stream
# server over TCP).  Prints the bytes the relay read upstream for one VM's
# boot alone, then for BENCH_VMS VMs booting together with the read cache
# (goal: about one boot's working set, not BENCH_VMS) and, with
# BENCH_NOCACHE=1, without it.  Not a pass/fail test; the VMs run the
# golden image's workload to its end marker (tests/e2e/lib/realos.sh).
# Usage: tests/bench/relay-boot-bench.sh [BUILD_DIR]
set -eu
. "$(dirname "$0")/bench-lib.sh"
vms=${BENCH_VMS:-8}
timeout=${BENCH_BOOT_TIMEOUT:-600}
. tests/e2e/lib/e2e.sh
. tests/e2e/lib/realos.sh
e2e_need qemu-system-x86_64 qemu-img
realos_init
T=$E2E_TMP
realos_images "$T/img" small
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import golden "$T/img/golden-small.img" >/dev/null
for i in $(seq "$vms"); do
  "$DISKFARM" device add "$(printf hv%02d "$i")" --mac "$(printf 52:54:00:13:01:%02x "$i")" \
    --vdisk golden --cache hypervisor >/dev/null
done
"$STREAMSVC" --farm "$T/farm" --nbd-listen 127.0.0.1:0 --admin-listen none >"$T/ss.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
for _ in $(seq 100); do grep -qs 'nbd listening' "$T/ss.log" && break; sleep 0.1; done
port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/ss.log" | sed 's/.*://')
[ -n "$port" ] || e2e_fail "streamsvc did not start"

# boot CACHE N OUT: N VMs at once through a new relay with
# --relay-cache-size CACHE; writes "UPSTREAM CLIENT SECONDS" to OUT (bytes
# the relay read upstream, bytes its clients read, wall time of the
# slowest boot).  Not in a subshell: its VMs must reach E2E_PIDS.
boot() {
  local cache=$1 n=$2 out=$3 sock=$T/relay-$1-$2.sock log=$T/relay-$1-$2.log relay t0 i name
  "$STREAMSVC" --relay --nbd-listen "unix:$sock" --upstream "127.0.0.1:$port" \
    --relay-cache-size "$cache" >"$log" 2>&1 &
  relay=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || e2e_fail "the relay did not start: $(cat "$log")"
  t0=$(date +%s)
  for i in $(seq "$n"); do
    name=$(printf hv%02d "$i")
    qemu-img create -q -f qcow2 -F raw -b "nbd+unix:///device/$name?socket=$sock" \
      "$T/$name-$cache-$n.qcow2"
    realos_qemu_start "$name" "$T/serial-$name-$cache-$n.log" -boot c -nic none \
      -drive "file=$T/$name-$cache-$n.qcow2,format=qcow2,if=ide"
  done
  for i in $(seq "$n"); do
    name=$(printf hv%02d "$i")
    realos_qemu_wait "$name" "$T/serial-$name-$cache-$n.log" "$timeout" >&2 ||
      e2e_fail "$name did not finish its workload (relay cache $cache, $n VMs)"
  done
  local secs=$(( $(date +%s) - t0 ))
  kill -TERM "$relay"; wait "$relay" 2>/dev/null || true
  sed -n 's/.*relay: client reads \([0-9]*\) bytes, upstream reads \([0-9]*\) bytes.*/\2 \1/p' "$log" |
    tail -1 | sed "s/\$/ $secs/" >"$out"
}

boot 256M 1 "$T/one"; read -r up1 cl1 s1 <"$T/one"
echo "1 VM, read cache 256M: upstream $up1 bytes (the working set of one boot), clients $cl1, ${s1} s"
boot 256M "$vms" "$T/many"; read -r upn cln sn <"$T/many"
echo "$vms VMs at once, read cache 256M: upstream $upn bytes, clients $cln, ${sn} s"
echo "ratio upstream ($vms VMs, cache) / one boot: $(echo "scale=2; $upn / $up1" | bc)x (clients read $(echo "scale=2; $cln / $cl1" | bc)x)"
if [ "${BENCH_NOCACHE:-0}" = 1 ]; then
  boot 0 "$vms" "$T/nocache"; read -r up0 cl0 s0 <"$T/nocache"
  echo "$vms VMs at once, no read cache: upstream $up0 bytes ($(echo "scale=2; $up0 / $up1" | bc)x one boot), ${s0} s"
fi
