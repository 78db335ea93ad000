#!/bin/bash
# NBD benchmark: streamsvc vs nbdkit (file plugin) vs qemu-nbd serving the
# same image in the same run.  Not a pass/fail test.  Main table over TCP
# loopback (every server on 127.0.0.1, a free port each), second table the
# same over UNIX sockets.
#   - 4 KiB random read, queue depth 16 (fio nbd engine), IOPS
#   - 4 KiB random read QD16 from a device export over a 10-version chain
#     (base + 9 sealed versions, through its write cache) vs nbdkit file on
#     the same disk flattened to raw
#   - 4 KiB random write QD16 to a device export vs nbdkit cow / qemu-nbd
#     with a qcow2 overlay (the peers' nearest equivalent of a write cache)
#   - sequential read of the whole image (nbdcopy to null:), MiB/s
#   - no stalls (TCP): p99 latency of a QD1 4 KiB random reader on device
#     A alone, then while device B (cache server-persistent) writes 4 KiB
#     with a FLUSH after every write (fio fsync=1), two jobs on two
#     connections; both p99s and their ratio
# For each server: its CPU time (utime+stime from /proc/PID/stat, the delta
# over the run) per 4 KiB op or per GiB, since on 2 cores the client
# saturates first.  The image is read once before the runs (page cache).
# Usage: tests/bench/nbd-bench.sh [BUILD_DIR]   (default build)
#   BENCH_SECONDS per fio run (10), BENCH_IMAGE_MB (1024), BENCH_TABLES
#   ("tcp unix"), BENCH_ONLY=no-stalls (the no-stalls test alone, no
#   chain), BENCH_THREADS (streamsvc --threads; 1 puts both devices of the
#   no-stalls test on one epoll worker, the case a blocking flush hurts)
set -eu
. "$(dirname "$0")/bench-lib.sh"
secs=${BENCH_SECONDS:-10}
size_mb=${BENCH_IMAGE_MB:-1024}
tables=${BENCH_TABLES:-tcp unix}
bench_need fio nbdkit qemu-nbd nbdcopy qemu-img qemu-io python3
T=$(mktemp -d /tmp/df-bench.XXXXXX)
chmod 711 "$T" # the daemons drop to the diskfarm user, which must reach the farm
pids=""; peers=""
trap 'for p in $peers $pids; do kill $p 2>/dev/null; done; sleep 0.5; rm -rf $T' EXIT
tck=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.1; done; echo "no $1"; exit 1; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "no listener on $1"; exit 1; }

echo "preparing a $size_mb MiB image (random data, qcow2 base) and a 10-version chain"
head -c "${size_mb}M" /dev/urandom >"$T/disk.raw"
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import golden "$T/disk.raw" >/dev/null
"$DISKFARM" vdisk import chain "$T/disk.raw" >/dev/null
"$DISKFARM" device add pc01 --mac 52:54:00:00:00:01 --vdisk golden --cache server >/dev/null
"$DISKFARM" device add pca --mac 52:54:00:00:00:0a --vdisk golden --cache server >/dev/null
"$DISKFARM" device add pcb --mac 52:54:00:00:00:0b --vdisk golden --cache server-persistent >/dev/null
"$DISKFARM" device add mnt --mac 52:54:00:00:00:02 --vdisk chain --type maintenance >/dev/null
"$DISKFARM" device add pcc --mac 52:54:00:00:00:0c --vdisk chain --type test --cache server >/dev/null
base=$T/farm/store/golden/golden.0.qcow2
qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$T/overlay.qcow2"

admin_port=$(free_port)
export DISKFARM_ADMIN=127.0.0.1:$admin_port
"$STREAMSVC" --farm "$T/farm" --nbd-listen "unix:$T/df.sock" --nbd-listen 127.0.0.1:0 \
  --admin-listen "127.0.0.1:$admin_port" ${BENCH_THREADS:+--threads "$BENCH_THREADS"} 2>"$T/df.log" &
df_pid=$!; pids="$pids $df_pid"
wait_sock "$T/df.sock"
for _ in $(seq 100); do grep -q 'nbd listening on 127' "$T/df.log" && break; sleep 0.1; done
df_port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')

if [ "${BENCH_ONLY:-}" != no-stalls ]; then
  # versions 1..9 of "chain": 8 MiB each, 1 MiB runs and 4 KiB pieces spread
  # over the disk, written through the maintenance device and sealed
  for v in $(seq 1 9); do
    "$DISKFARM" version new chain >/dev/null
    cmds=()
    for k in $(seq 0 3); do
      off=$(( (v * 397 + k * 83) % (size_mb - 4) ))
      cmds+=(-c "write -P $((v + k)) ${off}M 1M")
      for j in $(seq 0 15); do
        cmds+=(-c "write -P $v $(( ((v * 7919 + k * 131 + j * 61) % (size_mb * 256)) * 4096 )) 4k")
      done
    done
    qemu-io -f raw "${cmds[@]}" -c flush "nbd+unix:///device/mnt?socket=$T/df.sock" >/dev/null
    "$DISKFARM" version seal chain >/dev/null
  done
  top=$(ls "$T"/farm/store/chain/chain.*.qcow2 | sort -t. -k2 -n | tail -1)
  qemu-img convert -f qcow2 -O raw "$top" "$T/chain.raw"
  echo "chain: $(ls "$T"/farm/store/chain/*.qcow2 | wc -l) versions, top $(basename "$top")"
  cat "$T/disk.raw" "$T/chain.raw" "$T"/farm/store/*/*.qcow2 >/dev/null   # page cache
fi

# start_peers tcp|unix: nbdkit file, nbdkit cow, nbdkit file on the chain,
# qemu-nbd read-only base, qemu-nbd overlay; sets *_pid and *_uri
start_peers() {
  local mode=$1 name spec
  peers=""
  for spec in "kit:nbdkit -f file $T/disk.raw" "kitcow:nbdkit -f --filter=cow file $T/disk.raw" \
              "kitchain:nbdkit -f file $T/chain.raw" \
              "qn:qemu-nbd -r -f qcow2 -t --cache=writeback --aio=threads -e 4 $base" \
              "qnw:qemu-nbd -f qcow2 -t --cache=writeback -e 4 $T/overlay.qcow2"; do
    name=${spec%%:*}; set -- ${spec#*:}
    local cmd=$1; shift
    if [ "$mode" = tcp ]; then
      local port; port=$(free_port)
      if [ "$cmd" = nbdkit ]; then nbdkit -i 127.0.0.1 -p "$port" "$@" 2>>"$T/peers.log" &
      else qemu-nbd -b 127.0.0.1 -p "$port" "$@" 2>>"$T/peers.log" & fi
      eval "${name}_pid=$!; ${name}_uri=nbd://127.0.0.1:$port/"
      wait_port "$port"
    else
      if [ "$cmd" = nbdkit ]; then nbdkit -U "$T/$name.sock" "$@" 2>>"$T/peers.log" &
      else qemu-nbd -k "$T/$name.sock" "$@" 2>>"$T/peers.log" & fi
      eval "${name}_pid=$!; ${name}_uri='nbd+unix:///?socket=$T/$name.sock'"
      wait_sock "$T/$name.sock"
    fi
    peers="$peers $!"
  done
}
stop_peers() { for p in $peers; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; peers=""; }
df_uri() { # mode export
  if [ "$1" = tcp ]; then echo "nbd://127.0.0.1:$df_port/$2"; else echo "nbd+unix:///$2?socket=$T/df.sock"; fi
}

# fio_run pid uri rw -> "iops cpu_ticks_used"
fio_run() {
  local pid=$1 uri=$2 rw=$3 c0 c1 iops
  c0=$(cpu_ticks "$pid")
  iops=$(fio --name=b --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k --iodepth=16 \
    --size="${size_mb}M" --runtime="$secs" --time_based --output-format=json 2>/dev/null |
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
  printf '  %-30s %8d IOPS   server CPU %6s us/op\n' "$1" "$2" "$us_per_op"
}
ratio() { printf '%.2fx' "$(echo "$1 / $2" | bc -l)"; }

table() {
  local mode=$1 a at b bt c ct
  start_peers "$mode"
  echo
  echo "==== $mode: 4 KiB random read, QD16, ${secs}s each"
  read -r a at < <(fio_run $df_pid "$(df_uri $mode vdisk/golden)" randread)
  read -r b bt < <(fio_run $kit_pid "$kit_uri" randread)
  read -r c ct < <(fio_run $qn_pid "$qn_uri" randread)
  report_iops "streamsvc vdisk" "$a" "$at"
  report_iops "nbdkit file" "$b" "$bt"
  report_iops "qemu-nbd qcow2" "$c" "$ct"
  echo "  ratio streamsvc/nbdkit $(ratio $a $b)  streamsvc/qemu-nbd $(ratio $a $c)"

  echo "==== $mode: 4 KiB random read, QD16, device over a 10-version chain, ${secs}s each"
  read -r a at < <(fio_run $df_pid "$(df_uri $mode device/pcc)" randread)
  read -r b bt < <(fio_run $kitchain_pid "$kitchain_uri" randread)
  report_iops "streamsvc device (10 versions)" "$a" "$at"
  report_iops "nbdkit file (flattened raw)" "$b" "$bt"
  echo "  ratio streamsvc/nbdkit $(ratio $a $b)"

  echo "==== $mode: 4 KiB random write, QD16, through a write cache, ${secs}s each"
  read -r a at < <(fio_run $df_pid "$(df_uri $mode device/pc01)" randwrite)
  read -r b bt < <(fio_run $kitcow_pid "$kitcow_uri" randwrite)
  read -r c ct < <(fio_run $qnw_pid "$qnw_uri" randwrite)
  report_iops "streamsvc device (server)" "$a" "$at"
  report_iops "nbdkit cow filter" "$b" "$bt"
  report_iops "qemu-nbd qcow2 overlay" "$c" "$ct"
  echo "  ratio streamsvc/nbdkit-cow $(ratio $a $b)  streamsvc/qemu-nbd $(ratio $a $c)"

  echo "==== $mode: sequential read of $size_mb MiB (nbdcopy to null:)"
  local who name rest pid uri s t
  for who in "streamsvc:$df_pid:$(df_uri $mode vdisk/golden)" "nbdkit:$kit_pid:$kit_uri" \
             "qemu-nbd:$qn_pid:$qn_uri"; do
    name=${who%%:*}; rest=${who#*:}; pid=${rest%%:*}; uri=${rest#*:}
    read -r s t < <(copy_run "$pid" "$uri")
    printf '  %-12s %6.2f s  %7.0f MiB/s   server CPU %5.2f s/GiB\n' "$name" "$s" \
      "$(echo "$size_mb / $s" | bc -l)" "$(echo "$t / $tck * 1024 / $size_mb" | bc -l)"
  done
  stop_peers
}

# "p99_us read_iops write_iops" of fio's JSON on stdin: job 0's read p99
# and IOPS, job 1's write IOPS (0 without a job 1)
p99_read() {
  python3 -c 'import json,sys; t=sys.stdin.read(); js=json.loads(t[t.index("{"):])["jobs"]; j=js[0]["read"]; p=j["clat_ns"]["percentile"]; print("%.0f %.0f %.0f" % (p["99.000000"] / 1000, j["iops"], js[1]["write"]["iops"] if len(js) > 1 else 0))'
}

no_stalls() {
  local a b common="--ioengine=nbd --bs=4k --iodepth=1 --size=${size_mb}M --runtime=$secs --time_based"
  echo
  echo "==== tcp: no stalls: QD1 4 KiB random reader on device/pca, ${secs}s"
  local ai bi bw
  read -r a ai _ < <(fio --output-format=json $common --name=a --uri="$(df_uri tcp device/pca)" \
    --rw=randread 2>/dev/null | p99_read)
  read -r b bi bw < <(fio --output-format=json $common \
    --name=a --uri="$(df_uri tcp device/pca)" --rw=randread \
    --name=b --uri="$(df_uri tcp device/pcb)" --rw=randwrite --fsync=1 2>/dev/null | p99_read)
  printf '  reader alone                       p99 %6d us  (%d IOPS)\n' "$a" "$ai"
  printf '  reader + flush-per-write on pcb    p99 %6d us  (%d IOPS; pcb %d writes+flushes/s)\n' "$b" "$bi" "$bw"
  echo "  p99 ratio (with flusher / alone) $(ratio $b $a)"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, streamsvc --threads ${BENCH_THREADS:-0}"
[ "${BENCH_ONLY:-}" = no-stalls ] && { no_stalls; exit 0; }
for mode in $tables; do
  table "$mode"
  if [ "$mode" = tcp ]; then no_stalls; fi
done
