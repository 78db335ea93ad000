#!/bin/bash
# server-persistent: data acknowledged by FLUSH survives kill -9.
# server: the cache is empty after `device reset`.  quota: ENOSPC, not
# corruption.
. "$TESTS_SRCDIR/lib.sh"
need qemu-io nbdsh

make_raw "$T/disk.raw" 32
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add p --mac 52:54:00:00:00:01 --vdisk golden --cache server-persistent >/dev/null
df device add s --mac 52:54:00:00:00:02 --vdisk golden --cache server >/dev/null
df device add q --mac 52:54:00:00:00:03 --vdisk golden --cache ram:1 --quota 2M >/dev/null
start_streamsvc

# 1. flushed writes survive kill -9 (the connection stays open: no
#    disconnect-time flush can help)
nbdsh -u "$(uri device/p)" -c "
import os, signal
for i in range(64):
    h.pwrite(bytes([i + 1]) * 65536, i * 65536)
h.flush()
h.pwrite(b'\xee' * 4096, 4 << 20, nbd.CMD_FLAG_FUA)
os.kill($STREAMSVC_PID, signal.SIGKILL)
"
wait "$STREAMSVC_PID" 2>/dev/null || true
start_streamsvc
nbdsh -u "$(uri device/p)" -c "
for i in range(64):
    assert h.pread(65536, i * 65536) == bytes([i + 1]) * 65536, i
assert h.pread(4096, 4 << 20) == b'\xee' * 4096
" || fail "flushed data lost after kill -9"
pass "server-persistent survives kill -9"

# 2. server cache: kept across reconnects of one boot, empty after reset
qemu-io -f raw -c 'write -P 0x77 0 1M' "$(uri device/s)" >/dev/null
qemu-io -f raw -c 'read -P 0x77 0 1M' "$(uri device/s)" | grep -q 'read 1048576' ||
  fail "server cache lost between connections of one boot"
df device reset s >/dev/null
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri device/s)" || fail "cache not empty after reset"
pass "server cache reset by device reset"

# 3. quota: ENOSPC to the client, nothing half-applied, other I/O fine
nbdsh -u "$(uri device/q)" -c '
import errno
h.pwrite(b"\x01" * (1 << 20), 0)
try:
    h.pwrite(b"\x02" * (2 << 20), 1 << 20)
    raise SystemExit("quota not enforced")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
assert h.pread(1 << 20, 0) == b"\x01" * (1 << 20)
h.pwrite(b"\x03" * 4096, 0)          # overwrite costs nothing new
h.trim(1 << 20, 0)                   # frees space
h.pwrite(b"\x04" * (2 << 20), 0)     # now fits
' || fail "quota"
curl -sf "http://$ADMIN/metrics" | grep -q '^diskfarm_quota_refusals_total{device="q"} [1-9]' ||
  fail "quota metric"
grep -qi 'quota' "$T/streamsvc.log" || fail "no quota log line"
pass "quota ends in ENOSPC, metric and log line"
