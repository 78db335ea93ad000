#!/bin/bash
# Every NBD case of BAD-INPUTS.md against streamsvc, with a second
# connection reading meanwhile (the checks live in nbd-badinput.c).
. "$TESTS_SRCDIR/lib.sh"
: "${NBD_BADINPUT:?NBD_BADINPUT not set}"

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk golden >/dev/null
start_streamsvc

"$NBD_BADINPUT" "$SOCK" vdisk/golden device/pc01 || fail "bad-input cases"
kill -0 "$STREAMSVC_PID" || fail "streamsvc died"

# The daemon still serves a fresh client after all of it, and stops cleanly.
if command -v nbdinfo >/dev/null; then
  nbdinfo --size "$(uri vdisk/golden)" | grep -qx 16777216 || fail "nbdinfo after bad input"
fi
kill -TERM "$STREAMSVC_PID"
rc=0; wait "$STREAMSVC_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "streamsvc exit status $rc after SIGTERM"
[ ! -e "$SOCK" ] || fail "socket left behind"
pass "bad inputs answered, clean SIGTERM"
