#!/bin/bash
# version-lifecycle: maintenance -> seal -> test -> production, revert,
# scheduled promotion, merge (updates and base), delete, verify; each
# device type reads the version it should through NBD; every file passes
# qemu-img check; merged files equal the chains they replace.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io python3 nbdsh

init_vdisk vd 64
cp "$T/base.raw" "$T/expect1.raw"
json device add prod --mac 52:54:00:00:00:01 --vdisk vd --type production
json device add tst --mac 52:54:00:00:00:02 --vdisk vd --type test
json device add mnt --mac 52:54:00:00:00:03 --vdisk vd --type maintenance

json version new vd
jcheck "$T/j.json" 'd["version"] == 1' 'd["state"] == "maintenance"' 'd["parent"] == 0'
df version new vd 2>/dev/null && fail "second maintenance version accepted"
pass "version new"

start_streamsvc
# maintenance writes: a whole cluster, a 4 KiB piece of one, a zeroed range
qio device/mnt "write -P 0x11 3M 64k" "write -P 0x22 5M 4k" "write -z 0 64k" "flush"
printf '\x11%.0s' $(seq 65536) | dd of="$T/expect1.raw" bs=1M seek=3 conv=notrunc status=none
printf '\x22%.0s' $(seq 4096) | dd of="$T/expect1.raw" bs=4k seek=1280 conv=notrunc status=none
dd if=/dev/zero of="$T/expect1.raw" bs=64k count=1 conv=notrunc status=none
test -f "$FARM/store/vd/vd.1.maint/persistent.map" || fail "no maintenance cache in the store"

# a live maintenance session: seal and a second session are refused;
# version list counts the session
# (the holder stays until $T/release appears, at most 60 s)
nbdsh -u "$(uri device/mnt)" -c "
import os, time
for _ in range(1200):
    if os.path.exists('$T/release'): break
    time.sleep(0.05)
" &
holder=$!
wait_live mnt
qemu-io -f raw -r -c "read 0 4k" "$(uri device/mnt)" >"$T/second.out" 2>&1 &&
  fail "a second maintenance session was accepted"
df version seal vd 2>"$T/seal.err" && fail "seal accepted during a session"
grep -q "in use by a session" "$T/seal.err" || { cat "$T/seal.err"; fail "seal refusal text"; }
json version list vd --admin "$ADMIN"
jcheck "$T/j.json" '[v["sessions"] for v in d if v["version"] == 1] == [1]'
touch "$T/release"; wait $holder
pass "one maintenance session at a time, seal refused meanwhile, sessions listed"

json version seal vd
jcheck "$T/j.json" 'd["state"] == "test"' 'len(d["sha256"]) == 64' 'd["file"] == "vd.1.qcow2"'
test -d "$FARM/store/vd/vd.1.maint" && fail ".maint left after seal"
[ "$(qemu-img info --output=json "$FARM/store/vd/vd.1.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])')" = vd.0.qcow2 ] ||
  fail "backing file of version 1"
qemu-img compare -q -f raw -F qcow2 "$T/expect1.raw" "$FARM/store/vd/vd.1.qcow2" ||
  fail "sealed version differs from the maintenance writes"
check_store vd
pass "seal: layer equals base + maintenance writes"

# device types: production -> 0, test -> 1, maintenance -> newest published (1)
qio device/prod "read -P 0x00 3M 64k"
qio device/tst "read -P 0x11 3M 64k" "read -P 0x22 5M 4k" "read -P 0 0 64k"
qio "vdisk/vd@1" "read -P 0x11 3M 64k"
qio vdisk/vd "read -P 0 3M 64k"
pass "device types read their versions"

json version promote vd 1 --to production
jcheck "$T/j.json" 'd["state"] == "production"'
qio device/prod "read -P 0x00 3M 64k"        # running boot keeps version 0
df device reset prod >/dev/null
qio device/prod "read -P 0x11 3M 64k"        # next boot sees version 1
json version revert vd
jcheck "$T/j.json" 'd["version"] == 0'
[ "$(vstate vd 1)" = test ] || fail "revert did not put version 1 back to test"
df device reset prod >/dev/null
qio device/prod "read -P 0x00 3M 64k"
pass "promote at next boot, revert"

at=$(date -u -d '+3 sec' +%Y-%m-%dT%H:%M:%SZ)
json version promote vd 1 --to production --at "$at"
jcheck "$T/j.json" 'd["state"] == "pending"' 'd["pending_state"] == "production"'
df version delete vd 1 2>/dev/null && fail "delete of a pending version accepted"
sleep 4
[ "$(vstate vd 1)" = production ] || fail "scheduled promotion not applied"
pass "scheduled promotion"

# version 2, then merges
json version new vd
qio device/mnt "write -P 0x33 9M 128k" "write -P 0x44 3M 4k" "flush"
json version seal vd
cp "$FARM/store/vd/vd.2.qcow2" "$T/v2.before"
json version merge vd --updates 1..2
jcheck "$T/j.json" 'd["version"] == 3' 'd["parent"] == 0' 'd["state"] == "test"'
qemu-img compare -q "$FARM/store/vd/vd.2.qcow2" "$FARM/store/vd/vd.3.qcow2" ||
  fail "merged updates differ from the chain they replace"
json version merge vd --base
jcheck "$T/j.json" 'd["version"] == 4' 'd["parent"] is None'
qemu-img convert -O raw "$FARM/store/vd/vd.3.qcow2" "$T/chain.raw"
qemu-img compare -q -F raw "$FARM/store/vd/vd.4.qcow2" "$T/chain.raw" ||
  fail "merged base differs from qemu-img convert of the chain"
[ -z "$(qemu-img info --output=json "$FARM/store/vd/vd.4.qcow2" | grep backing-filename)" ] ||
  fail "merged base has a backing file"
cmp -s "$T/v2.before" "$FARM/store/vd/vd.2.qcow2" || fail "merge modified a published file"
check_store vd
df device reset tst >/dev/null
qio device/tst "read -P 0x33 9M 128k" "read -P 0x44 3M 4k"
pass "merge --updates and --base"

df version delete vd 0 2>"$T/del.err" && fail "delete of a backing version accepted"
grep -q "backing file" "$T/del.err" || fail "delete refusal text"
df version delete vd 1 2>/dev/null && fail "delete of a version a device boots / backs accepted"
json version delete vd 2 --admin "$ADMIN"
test -e "$FARM/store/vd/vd.2.qcow2" && fail "deleted version file still there"
check_store vd
pass "delete"

printf 'X' | dd of="$FARM/store/vd/vd.4.qcow2" bs=1 seek=70000 conv=notrunc status=none
df vdisk verify vd >/dev/null 2>&1 && fail "verify missed a changed file"
pass "verify"

json audit --limit 0
jcheck "$T/j.json" 'set(a["action"] for a in d) >= {"version.add", "version.seal", "version.state", "version.schedule", "version.promote", "version.revert", "version.merge", "version.delete"}'
pass "audit"
