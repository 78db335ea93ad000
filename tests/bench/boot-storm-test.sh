#!/bin/bash
# The boot-storm generator against streamsvc, both protocols: 3 targets
# replay a small trace of reads, writes, flushes and trims with failures=0
# and every request counted; each target's writes land in its own device
# cache (read back over NBD, compared with the generator's pattern); a
# trace reading past the end of the disk gives failures and exit 1; a bad
# trace line is refused with its line number.
. "$TESTS_SRCDIR/lib.sh"
: "${BOOT_STORM:?BOOT_STORM not set}"
need nbdsh qemu-img
qemu-img create -q -f raw "$T/disk.raw" 16M
df init >/dev/null
df vdisk import vd "$T/disk.raw" >/dev/null
for i in 1 2 3; do df device add "t$i" --mac "52:54:00:00:30:0$i" --vdisk vd >/dev/null; done
"$STREAMSVC" --farm "$FARM" --nbd-listen 127.0.0.1:0 --iscsi-listen 127.0.0.1:0 \
  --admin-listen none 2>"$T/streamsvc.log" &
_df_pids="$_df_pids $!"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/streamsvc.log" && break; sleep 0.1; done
nbd_port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
iscsi_port=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
[ -n "$nbd_port" ] && [ -n "$iscsi_port" ] || fail "streamsvc did not start"

cat >"$T/trace" <<'TR'
# t_us op offset length
0 R 0 4096
100 W 1048576 8192
200 F 0 0
300 R 1048576 8192
400 T 2097152 65536
500 R 0 524288
TR
# check_run OUT: failures=0 and 3 x 6 requests
check_run() {
  grep -q '^connected 3$' "$1" || fail "not all connected: $(cat "$1")"
  grep -q ' failures=0 ' "$1" || fail "failures: $(cat "$1")"
  grep -q ' requests=18 ' "$1" || fail "request count: $(cat "$1")"
}
"$BOOT_STORM" --trace "$T/trace" --count 3 --think-scale 0.01 --deadline 60 \
  --url "nbd://127.0.0.1:$nbd_port/device/t%d" >"$T/nbd.out" || fail "nbd storm: $(cat "$T/nbd.out")"
check_run "$T/nbd.out"
pass "NBD: 3 targets, 18 requests, 0 failures"
"$BOOT_STORM" --trace "$T/trace" --count 3 --think-scale 0.01 --deadline 60 \
  --url "iscsi://127.0.0.1:$iscsi_port/iqn.2026-11.org.diskfarm:t%d/1" >"$T/iscsi.out" ||
  fail "iscsi storm: $(cat "$T/iscsi.out")"
check_run "$T/iscsi.out"
pass "iSCSI: 3 targets, 18 requests, 0 failures"

# the writes (pattern byte i = i * 7 + 1) are in t2's cache, not in the vDisk
nbdsh -u "nbd://127.0.0.1:$nbd_port/device/t2" -c '
want = bytes((i * 7 + 1) & 0xff for i in range(8192))
assert h.pread(8192, 1048576) == want, "device t2 lacks the written data"' || fail "t2 read back"
nbdsh -u "nbd://127.0.0.1:$nbd_port/vdisk/vd" -c '
assert h.pread(8192, 1048576) == bytes(8192), "the vDisk changed"' || fail "vdisk read back"
pass "writes landed in each device's cache, the vDisk is untouched"

echo "0 R $((16 * 1048576)) 4096" >"$T/past-end"
rc=0; "$BOOT_STORM" --trace "$T/past-end" --count 2 --url "nbd://127.0.0.1:$nbd_port/device/t%d" \
  >"$T/bad.out" 2>"$T/bad.err" || rc=$?
[ $rc -eq 1 ] && grep -q ' failures=2 ' "$T/bad.out" || fail "a read past the end: rc $rc, $(cat "$T/bad.out")"
pass "a read past the end: 2 failures, exit 1"

printf '0 R 0 4096\n5 X 0 1\n' >"$T/garbage"
rc=0; "$BOOT_STORM" --trace "$T/garbage" --count 1 --url "nbd://127.0.0.1:$nbd_port/device/t%d" \
  2>"$T/garbage.err" || rc=$?
[ $rc -eq 2 ] && grep -q 'garbage:2: expected' "$T/garbage.err" || fail "bad line: rc $rc, $(cat "$T/garbage.err")"
pass "a bad trace line is refused with its line number"
