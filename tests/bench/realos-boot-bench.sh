#!/bin/bash
# Real-OS boot benchmark: power-on to the workload's end marker of the
# golden image (tests/e2e/lib/make-golden-linux.sh, small initramfs), the
# same image served by diskfarm and by a peer in the same run.  Not a
# pass/fail test.
#   iSCSI: qemu's NIC ROM iPXE (user networking, boot.ipxe over qemu's TFTP)
#          sanboots the target; the initramfs logs in again from the iBFT.
#          streamsvc (vDisk + `server` cache) vs tgtd (a raw copy, LUN 1).
#   NBD:   -kernel/-initrd, root on nbd0p2 through nbd-client.
#          streamsvc (device/<name>) vs qemu-nbd --snapshot (a raw copy).
# Boots one at a time, BENCH_RUNS (default 3) per server, alternating;
# prints each run, the medians and diskfarm/peer ratios (> 1: diskfarm
# slower).  Usage: tests/bench/realos-boot-bench.sh [BUILD_DIR]
set -eu
. "$(dirname "$0")/bench-lib.sh"
runs=${BENCH_RUNS:-3}
timeout=${BENCH_BOOT_TIMEOUT:-300}
. tests/e2e/lib/e2e.sh
. tests/e2e/lib/realos.sh
e2e_need qemu-system-x86_64 tgtd tgtadm qemu-nbd bc python3
[ "$(id -u)" = 0 ] || e2e_skip "tgtd needs root"
realos_init
T=$E2E_TMP
realos_images "$T/img" small
cp --sparse=always "$T/img/golden-small.img" "$T/peer.raw"
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import golden "$T/img/golden-small.img" >/dev/null
"$DISKFARM" device add vm01 --mac 52:54:00:79:00:01 --vdisk golden --cache server >/dev/null
IQN=iqn.2026-11.org.diskfarm:vm01

"$STREAMSVC" --farm "$T/farm" --nbd-listen 127.0.0.1:0 --admin-listen none \
  --iscsi-listen 127.0.0.1:0 >"$T/df.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
for _ in $(seq 100); do grep -qs 'iscsi listening' "$T/df.log" && break; sleep 0.1; done
df_iscsi=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')
df_nbd=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')
[ -n "$df_iscsi" ] && [ -n "$df_nbd" ] || e2e_fail "streamsvc did not start"
tgt_port=$(e2e_free_port)
e2e_start_tgt "$tgt_port" "$IQN" "$T/peer.raw"
qn_port=$(e2e_free_port)
qemu-nbd --snapshot -f raw -x device/vm01 -b 127.0.0.1 -p "$qn_port" --persistent \
  "$T/peer.raw" >"$T/qemu-nbd.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
sleep 1

mkdir -p "$T/tftp"
for s in df tgt; do
  port=$df_iscsi; [ $s = tgt ] && port=$tgt_port
  printf '#!ipxe\ndhcp\nset initiator-iqn %s\nsanboot iscsi:10.0.2.2::%s:1:%s\n' \
    "$IQN" "$port" "$IQN" >"$T/tftp/$s.ipxe"
done

bfail() { echo "FAIL: $*" >&2; exit 1; }    # inside $(boot ...)
boot() { # KIND SERVER RUN -> seconds
  local kind=$1 srv=$2 run=$3 log=$T/serial-$1-$2-$3.log t0 t1 port
  "$DISKFARM" device reset vm01 >/dev/null
  t0=$(date +%s.%N)
  if [ "$kind" = iscsi ]; then
    realos_qemu_start b "$log" -boot n \
      -nic "user,model=e1000,mac=52:54:00:79:00:01,tftp=$T/tftp,bootfile=$srv.ipxe"
  else
    port=$df_nbd; [ "$srv" = qemu-nbd ] && port=$qn_port
    realos_qemu_start b "$log" -kernel "$T/img/vmlinuz" -initrd "$T/img/initrd-small" \
      -append "console=ttyS0 panic=-1 no_timer_check rw quiet root=/dev/nbd0p2 nbdroot=10.0.2.2:$port/device/vm01 ip=dhcp" \
      -nic "user,model=e1000,mac=52:54:00:79:00:01"
  fi
  while ! grep -q DISKFARM-WORKLOAD-END "$log" 2>/dev/null; do
    kill -0 "$REALOS_PID_b" 2>/dev/null || break
    [ "$(echo "$(date +%s.%N) - $t0 > $timeout" | bc)" = 0 ] || break
    sleep 0.2
  done
  t1=$(date +%s.%N)
  realos_qemu_wait b "$log" 10 >/dev/null || { realos_dump "$log" >&2; bfail "$kind $srv run $run: no end marker"; }
  grep -aq DISKFARM-WORKLOAD-OK "$log" || bfail "$kind $srv run $run: workload failed"
  printf '%.1f\n' "$(echo "$t1 - $t0" | bc)"
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for kind in iscsi nbd; do
  peer=tgt; [ $kind = nbd ] && peer=qemu-nbd
  a="" b=""
  for r in $(seq "$runs"); do
    x=$(boot $kind df "$r"); a="$a $x"
    y=$(boot $kind $peer "$r"); b="$b $y"
    echo "$kind run $r: diskfarm $x s, $peer $y s"
  done
  ma=$(echo "$a" | median); mb=$(echo "$b" | median)
  echo "$kind median: diskfarm $ma s, $peer $mb s, ratio diskfarm/$peer $(echo "scale=2; $ma / $mb" | bc)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
