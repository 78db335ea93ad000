#!/bin/bash
# TFTP benchmark: bootstrapsvc vs tftpd-hpa (in.tftpd, started here on
# loopback, never the packaged daemon) vs dnsmasq's TFTP server serving the
# same files in the same run.  Not a pass/fail test: it prints times, CPU
# and ratios.  dnsmasq serves TFTP on port 69 only, so as root the whole
# benchmark re-runs itself in a network namespace of its own (unshare -n,
# loopback up): every server and client runs there, and port 69 is that
# namespace's.  Without root or unshare, dnsmasq is left out.
#   - 32 MiB at blksize 1468, lock-step (curl for both servers), best of 3:
#     unpinned, then (with taskset) servers and curl on the same CPU and on
#     two CPUs
#   - 32 MiB at blksize 1468, windowsize 16 (tests/interop/tftp-client.c;
#     tftpd-hpa has no windowsize, its lock-step time is the reference)
#   - a boot storm: N concurrent clients (default 500) fetch undionly.kpxe,
#     total wall time and failures (each must be 0); dnsmasq runs with
#     --tftp-max 1024 (its default, 50, would refuse most of the storm);
#     BENCH_TFTP_ONLY=storm runs this part alone (storm-bench.sh)
# For each server: CPU time (utime+stime+cutime+cstime from /proc/PID/stat,
# so tftpd-hpa's forked children count) per MiB sent; dnsmasq serves TFTP
# from its one process.
# Usage: tests/bench/tftp-bench.sh [BUILD_DIR]   (default build)
set -eu
self=$(realpath "$0")
. "$(dirname "$0")/bench-lib.sh"
TFTP_CLIENT=$build/tests/interop/tftp-client
STORM=${BENCH_STORM:-500}
bench_need curl /usr/sbin/in.tftpd "$BOOTSTRAPSVC" "$TFTP_CLIENT"
if [ -z "${DF_TFTP_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null &&
   command -v dnsmasq >/dev/null; then
  exec env DF_TFTP_NETNS=1 unshare -n "$self" "$build"
fi
if [ -n "${DF_TFTP_NETNS:-}" ]; then
  ip link set lo up
  # in.tftpd resolves --address with AI_ADDRCONFIG, which needs a
  # non-loopback IPv4 address: a TEST-NET-1 one on this namespace's lo
  ip addr add 192.0.2.1/32 dev lo
  DNSMASQ=dnsmasq
else
  DNSMASQ=""
  echo "(not root or no unshare/dnsmasq: dnsmasq, which needs port 69, is left out)"
fi
T=$(mktemp -d /tmp/df-tftp-bench.XXXXXX)
chmod 755 "$T"
pids=""
CG=/sys/fs/cgroup/cpuacct/df-tftp-bench.$$
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; sleep 0.3; rmdir "$CG" 2>/dev/null || true; rm -rf "$T"' EXIT
tck=$(getconf CLK_TCK)
# CPU milliseconds of a server.  tftpd-hpa forks a child per transfer and
# does not wait for it, so its children's time is read from a cpuacct
# cgroup made for it when possible; bootstrapsvc is one process.
cpu_ms() {
  if [ "$1" = "$hpa_pid" ] && [ -f "$CG/cpuacct.usage" ]; then
    echo "$(cat "$CG/cpuacct.usage") / 1000000" | bc
  elif [ "$1" = "$hpa_pid" ]; then
    echo -1
  else
    awk -v t="$tck" '{print int(($14 + $15) * 1000 / t)}' "/proc/$1/stat"
  fi
}
per_mib() { [ "$1" -lt 0 ] && echo "n/a" || printf '%.3f ms' "$(echo "$1 / $2" | bc -l)"; }
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

export DISKFARM_FARM=$T/farm
"$DISKFARM" init >/dev/null
chmod -R a+rX "$T/farm"
B=$T/farm/boot
head -c 32M /dev/urandom >"$B/big.bin"
cp /usr/lib/ipxe/undionly.kpxe "$B/" 2>/dev/null || head -c 70000 /dev/urandom >"$B/undionly.kpxe"
chmod 644 "$B"/*

P_DF=$(free_port)
"$BOOTSTRAPSVC" --farm "$T/farm" --address 127.0.0.1 --http-port 0 --tftp-port "$P_DF" \
  --no-proxydhcp --user "$(id -un)" 2>"$T/df.log" &
df_pid=$!; pids="$pids $df_pid"
P_HPA=$(free_port)
hpa_user=$( [ "$(id -u)" = 0 ] && echo nobody || id -un )
/usr/sbin/in.tftpd --foreground --address "127.0.0.1:$P_HPA" --user "$hpa_user" \
  --secure "$B" 2>"$T/hpa.log" &
hpa_pid=$!; pids="$pids $hpa_pid"
dm_pid=""
if [ -n "$DNSMASQ" ]; then
  # no DNS (--port 0), no config file, TFTP on this namespace's 127.0.0.1:69
  dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --pid-file= \
    --listen-address=127.0.0.1 --bind-interfaces --enable-tftp --tftp-root="$B" \
    --tftp-max=1024 --quiet-tftp --log-facility="$T/dnsmasq.log" &
  dm_pid=$!; pids="$pids $dm_pid"
fi
{ mkdir -p "$CG" && echo "$hpa_pid" >"$CG/tasks"; } 2>/dev/null ||
  echo "(no cpuacct cgroup: tftpd-hpa CPU not measured)"
for _ in $(seq 50); do grep -q ": ready" "$T/df.log" && break; sleep 0.1; done
sleep 0.3

# time_get PORT FILE OUT [curl args]: seconds of one curl fetch
time_get() {
  local port=$1 f=$2 out=$3; shift 3
  local pre=()
  if [ "${1:-}" = --taskset-cpu ]; then pre=(taskset -c "$2"); shift 2; fi
  local t0; t0=$(now)
  "${pre[@]}" curl -sS --max-time 60 "$@" "tftp://127.0.0.1:$port/$f" -o "$out"
  cmp -s "$B/$f" "$out" || { echo "bench: $f from port $port differs"; exit 1; }
  echo "$(now) - $t0" | bc -l
}
best_of3() { local b=999; for _ in 1 2 3; do t=$("$@"); b=$(echo "if ($t < $b) $t else $b" | bc -l); done; printf '%.3f' "$b"; }

c0_df=$(cpu_ms $df_pid); c0_hpa=$(cpu_ms $hpa_pid)
[ -n "$dm_pid" ] && c0_dm=$(cpu_ms $dm_pid)

if [ "${BENCH_TFTP_ONLY:-}" != storm ]; then
  echo "== 32 MiB, blksize 1468, lock-step (curl), best of 3"
  t_df=$(best_of3 time_get "$P_DF" big.bin "$T/o1" --tftp-blksize 1468)
  t_hpa=$(best_of3 time_get "$P_HPA" big.bin "$T/o2" --tftp-blksize 1468)
  printf '  bootstrapsvc %6.3f s   tftpd-hpa %6.3f s   speed ratio %.2fx\n' "$t_df" "$t_hpa" "$(echo "$t_hpa / $t_df" | bc -l)"
  if [ -n "$dm_pid" ]; then
    t_dm=$(best_of3 time_get 69 big.bin "$T/o4" --tftp-blksize 1468)
    c_dm=$(( $(cpu_ms $dm_pid) - c0_dm ))
    printf '  dnsmasq      %6.3f s   speed ratio (dnsmasq / bootstrapsvc) %.2fx   dnsmasq CPU %s/MiB\n' "$t_dm" \
      "$(echo "$t_dm / $t_df" | bc -l)" "$(per_mib "$c_dm" 96)"
  fi
  mib_df=96 mib_hpa=96      # MiB each server sent so far

  # Lock-step over loopback is one wake-up per packet on each side: its time
  # depends mostly on whether the scheduler put the server and curl on the
  # same CPU (a local switch) or on two (a cross-CPU wake-up each way), which
  # varies from run to run.  Pin both (all server threads; tftpd-hpa's
  # per-transfer children inherit the mask) to compare like with like.
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin() { taskset -a -p -c "$1" "$df_pid" >/dev/null; taskset -a -p -c "$1" "$hpa_pid" >/dev/null; }
    for place in same:0 cross:1; do
      pin 0
      c=${place#*:}
      p_df=$(best_of3 time_get "$P_DF" big.bin "$T/o1" --taskset-cpu "$c" --tftp-blksize 1468)
      p_hpa=$(best_of3 time_get "$P_HPA" big.bin "$T/o2" --taskset-cpu "$c" --tftp-blksize 1468)
      printf '  pinned, %-5s CPU: bootstrapsvc %6.3f s   tftpd-hpa %6.3f s   speed ratio %.2fx\n' \
        "${place%%:*}" "$p_df" "$p_hpa" "$(echo "$p_hpa / $p_df" | bc -l)"
      mib_df=$((mib_df + 96)) mib_hpa=$((mib_hpa + 96))
    done
    pin 0-$(( $(nproc) - 1 ))
  fi

  echo "== 32 MiB, blksize 1468, windowsize 16 (bootstrapsvc) vs tftpd-hpa lock-step"
  bw=999
  for _ in 1 2 3; do
    t0=$(now)
    "$TFTP_CLIENT" get 127.0.0.1 "$P_DF" big.bin "$T/o3" --blksize 1468 --windowsize 16 --quiet
    t=$(echo "$(now) - $t0" | bc -l)
    bw=$(echo "if ($t < $bw) $t else $bw" | bc -l)
  done
  cmp -s "$B/big.bin" "$T/o3" || { echo "bench: windowsize transfer differs"; exit 1; }
  printf '  bootstrapsvc w16 %6.3f s   tftpd-hpa lock-step %6.3f s   ratio %.2fx\n' "$bw" "$t_hpa" "$(echo "$t_hpa / $bw" | bc -l)"

  c_df=$(( $(cpu_ms $df_pid) - c0_df ))
  c_hpa=$(cpu_ms $hpa_pid); [ "$c_hpa" -ge 0 ] && c_hpa=$(( c_hpa - c0_hpa ))
  mib_df=$((mib_df + 96))   # the three windowsize transfers
  echo "  server CPU per MiB: bootstrapsvc $(per_mib "$c_df" "$mib_df")   tftpd-hpa $(per_mib "$c_hpa" "$mib_hpa")"
fi

storm() {
  local port=$1 tag=$2 fails=0 list=""
  mkdir -p "$T/storm-$tag"
  local c0; c0=$(cpu_ms "$3")
  local t0; t0=$(now)
  for i in $(seq "$STORM"); do
    curl -sS --max-time 60 --tftp-blksize 1428 "tftp://127.0.0.1:$port/undionly.kpxe" \
      -o "$T/storm-$tag/$i" 2>/dev/null &
    list="$list $!"
  done
  for p in $list; do wait "$p" || fails=$((fails + 1)); done
  local t; t=$(echo "$(now) - $t0" | bc -l)
  for i in $(seq "$STORM"); do cmp -s "$B/undionly.kpxe" "$T/storm-$tag/$i" || fails=$((fails + 1)); done
  local c; c=$(cpu_ms "$3"); [ "$c" -ge 0 ] && c=$(( c - c0 ))
  local mib; mib=$(echo "$STORM * $(stat -c %s "$B/undionly.kpxe") / 1048576" | bc -l)
  printf '  %-12s %6.2f s  failures %d  server CPU %s/MiB\n' "$tag" "$t" "$fails" \
    "$(per_mib "$c" "$mib")" >&2
  echo "$t"
}

echo "== storm: $STORM concurrent clients fetch undionly.kpxe (blksize 1428)"
s_df=$(storm "$P_DF" bootstrapsvc "$df_pid")
s_hpa=$(storm "$P_HPA" tftpd-hpa "$hpa_pid")
printf '  storm time ratio (tftpd-hpa / bootstrapsvc) %.2fx\n' "$(echo "$s_hpa / $s_df" | bc -l)"
if [ -n "$dm_pid" ]; then
  s_dm=$(storm 69 dnsmasq "$dm_pid")
  printf '  storm time ratio (dnsmasq / bootstrapsvc) %.2fx\n' "$(echo "$s_dm / $s_df" | bc -l)"
fi
kill -TERM "$df_pid"; wait "$df_pid" 2>/dev/null || true
grep -o "tftp: .*files read" "$T/df.log" | sed 's/^/  bootstrapsvc /'
