#!/bin/bash
# Idle sessions give their memory back: 32 targets each write 260 KiB and
# read 128 KiB of it back at once (what a boot does at its end: a large
# WRITE and a large READ grow the connection's buffers), then stay
# connected and idle.  After two worker ticks the server's RSS, over what
# it was with the same sessions connected and fresh, is at most 64 KiB per
# target (issue 15's goal for an idle session), over NBD and over iSCSI
# (boot-storm holds the connections open while the RSS is read).
. "$TESTS_SRCDIR/lib.sh"
: "${BOOT_STORM:?BOOT_STORM not set}"
need qemu-img
# ASan keeps freed memory in its quarantine and adds shadow memory: RSS
# says nothing about what the server keeps per session there
if ldd "$STREAMSVC" 2>/dev/null | grep -q libasan; then
  skip "streamsvc is built with AddressSanitizer (RSS is not the server's own)"
fi
N=32
LIMIT_KIB=64
qemu-img create -q -f raw "$T/disk.raw" 16M
df init >/dev/null
df vdisk import vd "$T/disk.raw" >/dev/null
for i in $(seq $N); do
  df device add "t$i" --mac "$(printf '52:54:00:00:31:%02x' "$i")" --vdisk vd >/dev/null
done
"$STREAMSVC" --farm "$FARM" --nbd-listen 127.0.0.1:0 --iscsi-listen 127.0.0.1:0 \
  --admin-listen none 2>"$T/streamsvc.log" &
df_pid=$!; _df_pids="$_df_pids $df_pid"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/streamsvc.log" && break; sleep 0.1; done
nbd_port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
iscsi_port=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
[ -n "$nbd_port" ] && [ -n "$iscsi_port" ] || fail "streamsvc did not start"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$df_pid/status"; }

printf '0 W 1048576 266240\n0 R 1048576 131072\n0 F 0 0\n' >"$T/trace"
# idle_growth URL: KiB of server RSS per target, idle after the trace
idle_growth() {
  local url=$1 r0="" r1="" sp
  "$BOOT_STORM" --trace "$T/trace" --count $N --think-scale 0 --deadline 60 \
    --hold-ms 3500 --url "$url" >"$T/storm.out" 2>"$T/storm.err" &
  sp=$!
  for _ in $(seq 300); do
    [ -z "$r0" ] && grep -q '^connected' "$T/storm.out" && r0=$(rss_kib)
    # two ticks (1 s each): one to see no new message, one to spare
    [ -z "$r1" ] && grep -q '^booted' "$T/storm.out" && { sleep 2.5; r1=$(rss_kib); }
    [ -n "$r1" ] && break
    sleep 0.05
  done
  wait $sp || fail "storm on $url: $(cat "$T/storm.out" "$T/storm.err")"
  grep -q ' failures=0 ' "$T/storm.out" || fail "failures: $(cat "$T/storm.out")"
  [ -n "$r0" ] && [ -n "$r1" ] || fail "no RSS samples: $(cat "$T/storm.out")"
  echo $(( (r1 - r0) / N ))
}
g=$(idle_growth "nbd://127.0.0.1:$nbd_port/device/t%d")
[ "$g" -le $LIMIT_KIB ] || fail "NBD: $g KiB of RSS per idle target after its writes (limit $LIMIT_KIB)"
pass "NBD: $g KiB of RSS per idle target after a 260 KiB write and a 128 KiB read"
g=$(idle_growth "iscsi://127.0.0.1:$iscsi_port/iqn.2026-11.org.diskfarm:t%d/1")
[ "$g" -le $LIMIT_KIB ] || fail "iSCSI: $g KiB of RSS per idle target after its writes (limit $LIMIT_KIB)"
pass "iSCSI: $g KiB of RSS per idle target after a 260 KiB write and a 128 KiB read"
