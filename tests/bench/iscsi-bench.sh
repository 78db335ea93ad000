#!/bin/bash
# iSCSI benchmark: streamsvc vs tgt serving the same image in the same run.
# Not a pass/fail test.  iscsi-perf, 4 KiB requests (8 x 512-byte blocks)
# at queue depth 16, sequential then random reads, BENCH_SECONDS each.
# tgtd is started here on a private portal and control port, with the
# image as a raw file (tgt's rdwr backing store); streamsvc serves it as a
# qcow2 vDisk through a device write cache (the path a target boots from).
# For each server: IOPS, and its CPU time (utime+stime from /proc/PID/stat)
# per 4 KiB op, since on 2 cores the client is saturated first.
# Usage: tests/bench/iscsi-bench.sh [BUILD_DIR]   (default build)
set -eu
. "$(dirname "$0")/bench-lib.sh"
secs=${BENCH_SECONDS:-10}
size_mb=${BENCH_IMAGE_MB:-1024}
bench_need iscsi-perf tgtd tgtadm qemu-img
[ "$(id -u)" = 0 ] || { echo "bench: tgtd needs root"; exit 77; }
T=$(mktemp -d /tmp/df-ibench.XXXXXX)
chmod 711 "$T" # the daemons drop to the diskfarm user, which must reach the farm
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; sleep 0.5; rm -rf $T' EXIT
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "preparing a $size_mb MiB image (random data)"
head -c "${size_mb}M" /dev/urandom >"$T/disk.raw"
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import golden "$T/disk.raw" >/dev/null
"$DISKFARM" device add pc01 --mac 52:54:00:00:00:01 --vdisk golden --cache server >/dev/null

"$STREAMSVC" --farm "$T/farm" --nbd-listen "unix:$T/df.sock" --admin-listen none \
  --iscsi-listen 127.0.0.1:0 2>"$T/df.log" &
df_pid=$!; pids="$pids $df_pid"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/df.log" && break; sleep 0.1; done
df_port=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')

tgt_port=$(free_port)
ctl=$(( (RANDOM % 1000) + 2000 ))
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$tgt_port" >"$T/tgt.log" 2>&1 &
tgt_pid=$!; pids="$pids $tgt_pid"
sleep 1
tgt_iqn=iqn.2026-11.org.diskfarm.bench:tgt
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$tgt_iqn"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$T/disk.raw"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL

# run NAME PID URL [-r]: prints IOPS and CPU per op
run() {
  local name=$1 pid=$2 url=$3; shift 3
  local t0 t1 iops
  t0=$(cpu_ticks "$pid")
  iops=$(timeout $((secs + 20)) iscsi-perf -m 16 -b 8 -t "$secs" "$@" "$url" 2>&1 |
         tr '\r' '\n' | grep -oE 'iops average [0-9]+' | tail -1 | awk '{print $3}')
  t1=$(cpu_ticks "$pid")
  iops=${iops:-0}
  awk -v n="$name" -v i="$iops" -v d=$((t1 - t0)) -v tck="$tck" -v s="$secs" \
    'BEGIN { ops = i * s; printf "  %-10s %8d IOPS  %6.1f us CPU/op\n", n, i,
             ops ? d / tck * 1e6 / ops : 0 }'
  echo "$iops" >"$T/last"
}

for mode in sequential random; do
  flag=""; [ $mode = random ] && flag=-r
  echo "4 KiB $mode read, QD16, ${secs}s:"
  run streamsvc "$df_pid" "iscsi://127.0.0.1:$df_port/iqn.2026-11.org.diskfarm:pc01/1" $flag
  a=$(cat "$T/last")
  run tgt "$tgt_pid" "iscsi://127.0.0.1:$tgt_port/$tgt_iqn/1" $flag
  b=$(cat "$T/last")
  awk -v a="$a" -v b="$b" 'BEGIN { printf "  ratio streamsvc/tgt: %.2f (goal >= 3, issue 15)\n", b ? a / b : 0 }'
done
