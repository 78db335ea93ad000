#!/bin/bash
# Tier 3 across a restart of the server itself: a server or ram cache
# dies with streamsvc's process.  A device whose OS was using it (a
# session open at the kill -9, or at a SIGTERM stop) gets a lost cache
# from the next process for that boot generation: EIO, a log line, the
# metric, never an empty cache under the running OS.  A device whose
# session had ended gets a fresh cache, and so does the next boot
# generation (device reset).
. "$TESTS_SRCDIR/lib.sh"
need nbdsh qemu-io curl

init_vdisk g 16
df device add s --mac 52:54:00:00:00:61 --vdisk g --cache server >/dev/null
df device add r --mac 52:54:00:00:00:62 --vdisk g --cache ram:4 >/dev/null
df device add q --mac 52:54:00:00:00:63 --vdisk g --cache server >/dev/null

# hold DEVICE TAG: a session that wrote and flushed 0x44 at 0, then stays
# until $T/release.TAG (at most 60 s), whatever becomes of the server;
# $T/held.DEVICE says it wrote
hold() {
  nbdsh -u "$(uri "device/$1")" -c "
import os, time
h.pwrite(b'\x44' * 65536, 0); h.flush()
open('$T/held.$1', 'w').close()
for _ in range(600):
    if os.path.exists('$T/release.$2'): break
    time.sleep(0.1)
" >/dev/null 2>&1 &
  _df_pids="$_df_pids $!"
  for _ in $(seq 100); do [ -f "$T/held.$1" ] && { rm "$T/held.$1"; return 0; }; sleep 0.1; done
  fail "device $1: the held session did not write"
}
lost() { # DEVICE: its reads fail with EIO
  ! qemu-io -f raw -r -c 'read 0 4k' "$(uri "device/$1")" >"$T/out" 2>&1 &&
    grep -qi "input/output error" "$T/out"
}
fresh() { # DEVICE: reads the version's data at 0 (not 0x44), no error
  qemu-io -f raw -r -c 'read -P 0x44 0 4k' "$(uri "device/$1")" >"$T/out" 2>&1
  ! grep -qi "input/output error" "$T/out" && grep -qi "pattern verification failed" "$T/out"
}
lost_metric() {
  curl -s "http://$ADMIN/metrics" | grep -q "^diskfarm_cache_lost_total $1\$"
}

start_streamsvc
hold s a
hold r a
qemu-io -f raw -c 'write -P 0x44 0 64k' -c flush "$(uri device/q)" >/dev/null
ls "$FARM/cache/s/" | grep -q '^live\.' || fail "no live mark of device s"
ls "$FARM/cache/q/" | grep -q '^live\.' && fail "device q's mark stayed after its session"
stop_streamsvc KILL
touch "$T/release.a"
start_streamsvc
lost s || fail "device s after kill -9: $(cat "$T/out")"
lost r || fail "device r after kill -9: $(cat "$T/out")"
grep -q "device s: its server write cache of boot generation .* died with a previous process" \
  "$T/streamsvc.log" || fail "no log line for device s"
lost_metric 2 || fail "lost-cache metric: $(curl -s "http://$ADMIN/metrics" | grep cache_lost)"
fresh q || fail "device q (no session at the kill) did not get a fresh cache: $(cat "$T/out")"
lost s || fail "device s served a cache on its second connection"
pass "kill -9: the devices in use get EIO (server, ram), a log line, the metric; an idle one a fresh cache"

df device reset s >/dev/null
fresh s || fail "device s's next boot generation: $(cat "$T/out")"
hold s b
stop_streamsvc TERM
touch "$T/release.b"
start_streamsvc
lost s || fail "device s after a SIGTERM stop with its session open: $(cat "$T/out")"
df device reset s >/dev/null
fresh s || fail "device s after device reset: $(cat "$T/out")"
[ "$(ls "$FARM/cache/s/" | grep -c '^live\.')" -le 1 ] || fail "stale live marks: $(ls "$FARM/cache/s/")"
pass "a stop with a session open loses it too; device reset gives a fresh cache"

# two servers on one farm directory (as pxe-boot's): a live mark of the
# other, running, process is not a dead one's
hold s c
"$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/second.sock" --admin-listen 127.0.0.1:0 \
  >"$T/second.log" 2>&1 &
_df_pids="$_df_pids $!"
for _ in $(seq 100); do [ -S "$T/second.sock" ] && break; sleep 0.1; done
qemu-io -f raw -r -c 'read 0 4k' "nbd+unix:///device/s?socket=$T/second.sock" >"$T/out" 2>&1
grep -q "read 4096/4096" "$T/out" ||
  fail "a second server on the farm took the first one's live mark for a dead one: $(cat "$T/out")"
! grep -q "died with a previous process" "$T/second.log" || fail "second server: $(cat "$T/second.log")"
touch "$T/release.c"
pass "a second server on the same farm directory serves the device (the first's mark is of a live process)"
