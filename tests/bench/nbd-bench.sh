#!/bin/bash
# NBD benchmark: streamsvc vs nbdkit (file plugin) vs qemu-nbd serving the
# same image in the same run.  Not a pass/fail test.
#   - 4 KiB random read, queue depth 16 (fio nbd engine), IOPS
#   - 4 KiB random write QD16 to a device export vs nbdkit cow / qemu-nbd
#     with a qcow2 overlay (the peers' nearest equivalent of a write cache)
#   - 1 GiB sequential read (nbdcopy), seconds
# For each server: its CPU time (utime+stime from /proc/PID/stat) per GiB
# and per 4 KiB op, since on 2 cores the client saturates first.
# Usage: tests/bench/nbd-bench.sh [BUILD_DIR]   (default build)
set -eu
cd "$(dirname "$0")/../.."
build=$(realpath "${1:-build}")
STREAMSVC=$build/streamsvc/streamsvc
DISKFARM=$build/console/diskfarm
secs=${BENCH_SECONDS:-10}
for t in fio nbdkit qemu-nbd nbdcopy qemu-img; do
  command -v $t >/dev/null || { echo "bench: $t missing"; exit 77; }
done
T=$(mktemp -d /tmp/df-bench.XXXXXX)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; sleep 0.5; rm -rf $T' EXIT
tck=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.1; done; echo "no $1"; exit 1; }

echo "preparing a 1 GiB image (random data, qcow2 base)"
head -c 1G /dev/urandom >"$T/disk.raw"
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import golden "$T/disk.raw" >/dev/null
"$DISKFARM" device add pc01 --mac 52:54:00:00:00:01 --vdisk golden --cache server >/dev/null
base=$T/farm/store/golden/golden.0.qcow2
qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$T/overlay.qcow2"

"$STREAMSVC" --farm "$T/farm" --nbd-listen "unix:$T/df.sock" --admin-listen none 2>"$T/df.log" &
df_pid=$!; pids="$pids $df_pid"
nbdkit -f -U "$T/kit.sock" file "$T/disk.raw" &
kit_pid=$!; pids="$pids $kit_pid"
nbdkit -f -U "$T/kitcow.sock" --filter=cow file "$T/disk.raw" &
kitcow_pid=$!; pids="$pids $kitcow_pid"
qemu-nbd -r -k "$T/qn.sock" -f qcow2 -t --cache=writeback --aio=threads -e 4 "$base" &
qn_pid=$!; pids="$pids $qn_pid"
qemu-nbd -k "$T/qnw.sock" -f qcow2 -t --cache=writeback -e 4 "$T/overlay.qcow2" &
qnw_pid=$!; pids="$pids $qnw_pid"
for s in df kit kitcow qn qnw; do wait_sock "$T/$s.sock"; done

# fio run: name uri rw -> prints "iops cpu_ticks_used"
fio_run() { # pid uri rw
  local pid=$1 uri=$2 rw=$3 c0 c1 iops
  c0=$(cpu_ticks "$pid")
  iops=$(fio --name=b --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k --iodepth=16 \
    --size=1G --runtime="$secs" --time_based --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; print(int(j["read"]["iops"] + j["write"]["iops"]))')
  c1=$(cpu_ticks "$pid")
  echo "$iops $((c1 - c0))"
}

copy_run() { # pid uri -> "seconds cpu_ticks"
  local pid=$1 uri=$2 c0 c1 t0 t1
  c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  nbdcopy "$uri" null:
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
  echo "$(echo "$t1 - $t0" | bc -l) $((c1 - c0))"
}

report_iops() { # label iops ticks
  local us_per_op
  us_per_op=$(echo "scale=2; $3 * 1000000 / $tck / ($2 * $secs)" | bc -l)
  printf '  %-28s %8d IOPS   server CPU %6s us/op\n' "$1" "$2" "$us_per_op"
}

echo
echo "== 4 KiB random read, QD16, ${secs}s each"
read -r a at < <(fio_run $df_pid "nbd+unix:///vdisk/golden?socket=$T/df.sock" randread)
read -r b bt < <(fio_run $kit_pid "nbd+unix:///?socket=$T/kit.sock" randread)
read -r c ct < <(fio_run $qn_pid "nbd+unix:///?socket=$T/qn.sock" randread)
report_iops "streamsvc vdisk" "$a" "$at"
report_iops "nbdkit file" "$b" "$bt"
report_iops "qemu-nbd qcow2" "$c" "$ct"
printf '  ratio streamsvc/nbdkit %.2fx  streamsvc/qemu-nbd %.2fx\n' \
  "$(echo "$a / $b" | bc -l)" "$(echo "$a / $c" | bc -l)"

echo
echo "== 4 KiB random write, QD16, through a write cache, ${secs}s each"
read -r a at < <(fio_run $df_pid "nbd+unix:///device/pc01?socket=$T/df.sock" randwrite)
read -r b bt < <(fio_run $kitcow_pid "nbd+unix:///?socket=$T/kitcow.sock" randwrite)
read -r c ct < <(fio_run $qnw_pid "nbd+unix:///?socket=$T/qnw.sock" randwrite)
report_iops "streamsvc device (server)" "$a" "$at"
report_iops "nbdkit cow filter" "$b" "$bt"
report_iops "qemu-nbd qcow2 overlay" "$c" "$ct"
printf '  ratio streamsvc/nbdkit-cow %.2fx  streamsvc/qemu-nbd %.2fx\n' \
  "$(echo "$a / $b" | bc -l)" "$(echo "$a / $c" | bc -l)"

echo
echo "== 1 GiB sequential read (nbdcopy to null:)"
for who in "streamsvc:$df_pid:nbd+unix:///vdisk/golden?socket=$T/df.sock" \
           "nbdkit:$kit_pid:nbd+unix:///?socket=$T/kit.sock" \
           "qemu-nbd:$qn_pid:nbd+unix:///?socket=$T/qn.sock"; do
  name=${who%%:*}; rest=${who#*:}; pid=${rest%%:*}; uri=${rest#*:}
  read -r s t < <(copy_run "$pid" "$uri")
  printf '  %-12s %6.2f s  %7.0f MiB/s   server CPU %5.2f s/GiB\n' "$name" "$s" \
    "$(echo "1024 / $s" | bc -l)" "$(echo "$t / $tck" | bc -l)"
  eval "seq_$name=\$s" 2>/dev/null || true
done
