#!/bin/bash
# Boot storm: N targets boot at once from one server, each on its own
# connection, each replaying a recorded Linux boot trace
# (BENCH_TRACE, default traces/linux-boot-rw.trace.gz: reads, writes,
# flushes; see traces/README) with tests/bench/boot-storm.  Not a
# pass/fail test, but every phase must end with failures=0.
#   streamsvc NBD    N device exports device/tN (each its own write cache)
#   nbdkit           one nbdkit, file plugin + cow filter, N connections
#                    (nbdkit's cow overlay is per instance: all N targets
#                    share one overlay; no per-target cache exists there)
#   streamsvc iSCSI  N targets iqn.2026-11.org.diskfarm:tN
#   tgt              N targets, each LUN 1 on the same raw file, a copy of
#                    its own (tgt has no per-initiator cache: all N
#                    targets' writes land in that one shared file)
# Per phase: total time, per-request p50/p99, per-boot p50/p99, failures,
# server CPU (utime+stime from /proc/PID/stat) per GiB and per op, server
# RSS per connected target (VmRSS delta / N, after all connected and once
# every booted session has been idle for BENCH_STORM_IDLE_MS, 2.5 s: an
# idle session gives its buffers back at the server's tick).  Each phase
# has a hard timeout (BENCH_STORM_TIMEOUT, 300 s).
# Then TFTP: BENCH_TFTP_N (500) clients fetch undionly.kpxe at once from
# bootstrapsvc, tftpd-hpa and dnsmasq (tftp-bench.sh BENCH_TFTP_ONLY=storm).
# Usage: tests/bench/storm-bench.sh [BUILD_DIR]
#   BENCH_STORM_N ("100 250 500"), BENCH_THINK_SCALE (0.1),
#   BENCH_STORM_SERVERS ("df-nbd nbdkit df-iscsi tgt tftp": the phases run)
set -eu
. "$(dirname "$0")/bench-lib.sh"
STORM=$build/tests/bench/boot-storm
TRACE_GZ=${BENCH_TRACE:-tests/bench/traces/linux-boot-rw.trace.gz}
counts=${BENCH_STORM_N:-100 250 500}
think=${BENCH_THINK_SCALE:-0.1}
limit=${BENCH_STORM_TIMEOUT:-300}
idle_ms=${BENCH_STORM_IDLE_MS:-2500}
servers=${BENCH_STORM_SERVERS:-df-nbd nbdkit df-iscsi tgt tftp}
runs() { case " $servers " in *" $1 "*) return 0;; esac; return 1; }
for t in nbdkit tgtd tgtadm python3 "$STORM"; do
  command -v "$t" >/dev/null || { echo "bench: $t missing (boot-storm needs libnbd-dev, libiscsi-dev)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "bench: tgtd needs root"; exit 77; }
max=0; for n in $counts; do [ "$n" -gt "$max" ] && max=$n; done
T=$(mktemp -d /tmp/df-storm.XXXXXX)
chmod 711 "$T" # the daemons drop to the diskfarm user, which must reach the farm
pids=""; kill9=""
# tgtd ignores SIGTERM: it is in kill9 too
trap 'rc=$?; for p in $pids; do kill $p 2>/dev/null; done; for p in $kill9; do kill -9 $p 2>/dev/null; done
      for p in $pids; do { wait $p; } 2>/dev/null; done; rm -rf $T; exit $rc' EXIT
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "no listener on $1"; exit 1; }

gunzip -c "$TRACE_GZ" >"$T/boot.trace"
tests/e2e/lib/make-linux-disk.sh "$T/disk.raw" 64 >/dev/null
export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
"$DISKFARM" vdisk import linux "$T/disk.raw" >/dev/null
echo "adding $max devices"
for i in $(seq "$max"); do
  "$DISKFARM" device add "t$i" --mac "$(printf '52:54:00:10:%02x:%02x' $((i / 256)) $((i % 256)))" \
    --vdisk linux --cache server >/dev/null
done

# every target comes from 127.0.0.1: no per-source connection limit
"$STREAMSVC" --farm "$T/farm" --nbd-listen 127.0.0.1:0 --iscsi-listen 127.0.0.1:0 \
  --admin-listen none --max-connections-per-source 0 2>"$T/df.log" &
df_pid=$!; pids="$pids $df_pid"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/df.log" && break; sleep 0.1; done
df_nbd=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')
df_iscsi=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/df.log" | sed 's/.*://')

if runs nbdkit; then
  kit_port=$(free_port)
  nbdkit -f -i 127.0.0.1 -p "$kit_port" --filter=cow file "$T/disk.raw" 2>"$T/kit.log" &
  kit_pid=$!; pids="$pids $kit_pid"
  wait_port "$kit_port"
fi

if runs tgt; then
  tgt_port=$(free_port)
  ctl=$(( (tgt_port % 10000) + 10000 ))
  mkdir -p /var/run/tgtd
  tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$tgt_port" >"$T/tgt.log" 2>&1 &
  tgt_pid=$!; pids="$pids $tgt_pid"; kill9="$kill9 $tgt_pid"
  for _ in $(seq 50); do tgtadm -C "$ctl" --lld iscsi --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
  cp "$T/disk.raw" "$T/tgt.raw"
  echo "adding $max tgt targets"
  for i in $(seq "$max"); do
    tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid "$i" -T "iqn.2026-11.org.diskfarm.tgt:t$i"
    tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid "$i" --lun 1 -b "$T/tgt.raw"
    tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid "$i" -I ALL
  done
  wait_port "$tgt_port"
fi

# phase NAME PID N URL-TEMPLATE: one storm, one table row
phase() {
  local name=$1 pid=$2 n=$3 url=$4 c0 c1 r0 rc=0 rss_conn="" rss_boot="" line
  c0=$(cpu_ticks "$pid"); r0=$(rss_kib "$pid")
  : >"$T/storm.out"
  timeout "$limit" "$STORM" --trace "$T/boot.trace" --count "$n" --url "$url" \
    --think-scale "$think" --deadline $((limit - 10)) --hold-ms $((idle_ms + 500)) >"$T/storm.out" 2>"$T/storm.err" &
  local sp=$!
  while kill -0 $sp 2>/dev/null; do
    [ -z "$rss_conn" ] && grep -q '^connected' "$T/storm.out" && { sleep 0.5; rss_conn=$(rss_kib "$pid"); }
    [ -z "$rss_boot" ] && grep -q '^booted' "$T/storm.out" &&
      { sleep "$(echo "$idle_ms / 1000" | bc -l)"; rss_boot=$(rss_kib "$pid"); }
    sleep 0.1
  done
  wait $sp || rc=$?
  c1=$(cpu_ticks "$pid")
  line=$(grep '^targets=' "$T/storm.out" || true)
  if [ -z "$line" ]; then
    printf '  %-16s %4d  no result (exit %d, timeout %ds): %s\n' "$name" "$n" "$rc" "$limit" \
      "$(head -c 200 "$T/storm.err" | tr '\n' ' ')"
    return
  fi
  eval "$line"   # targets= failures= connect_s= wall_s= requests= bytes= req_p50_us= ...
  awk -v name="$name" -v n="$n" -v f="$failures" -v cs="$connect_s" -v w="$wall_s" \
      -v rq="$requests" -v b="$bytes" -v p50="$req_p50_us" -v p99="$req_p99_us" \
      -v b50="$boot_p50_ms" -v b99="$boot_p99_ms" -v d=$((c1 - c0)) -v tck="$tck" \
      -v r0="$r0" -v rc="${rss_conn:-0}" -v rb="${rss_boot:-0}" 'BEGIN {
    cpu = d / tck; gib = b / 1073741824
    printf "  %-16s %4d %5d %6.2f %7.2f %7d %7d %8.0f %8.0f %8.2f %8.1f %7.0f %7.0f\n",
      name, n, f, cs, w, p50, p99, b50, b99, gib ? cpu / gib : 0, rq ? cpu * 1e6 / rq : 0,
      rc ? (rc - r0) / n : 0, rb ? (rb - r0) / n : 0 }'
  [ "$failures" = 0 ] || sed 's/^/    /' "$T/storm.err" | head -3
}

nreq=$(grep -vc '^#' "$T/boot.trace")
echo
echo "== boot storm: each target replays $nreq requests ($TRACE_GZ), think time x$think, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  server           N    fail conn_s  total_s req_p50 req_p99 boot_p50 boot_p99  CPU s/GiB  CPU us/op  RSS KiB/target"
echo "                                          us      us      ms       ms                            connected  booted+idle"
for n in $counts; do
  runs df-nbd && phase "streamsvc NBD" "$df_pid" "$n" "nbd://127.0.0.1:$df_nbd/device/t%d"
  runs nbdkit && phase "nbdkit cow" "$kit_pid" "$n" "nbd://127.0.0.1:$kit_port/t%d"
  runs df-iscsi && phase "streamsvc iSCSI" "$df_pid" "$n" "iscsi://127.0.0.1:$df_iscsi/iqn.2026-11.org.diskfarm:t%d/1"
  runs tgt && phase "tgt" "$tgt_pid" "$n" "iscsi://127.0.0.1:$tgt_port/iqn.2026-11.org.diskfarm.tgt:t%d/1"
done
if runs tftp; then
  echo
  echo "== TFTP storm: ${BENCH_TFTP_N:-500} clients at once (tests/bench/tftp-bench.sh)"
  BENCH_TFTP_ONLY=storm BENCH_STORM=${BENCH_TFTP_N:-500} timeout "$limit" tests/bench/tftp-bench.sh "$build" ||
    echo "  tftp-bench: exit $?"
fi
