#!/bin/bash
# iSCSI front end against libiscsi's tools: discovery (with and without
# CHAP), inquiry, capacity, one-way and mutual CHAP, a device reached by
# name and by MAC, read-only vdisk targets, and the whole iscsi-test-cu
# suite in one run (libiscsi 1.19 has no iSCSI.iSCSINop, iSCSISendTargets
# or iSCSICHAP suites: NOP, SendTargets and CHAP are covered by the checks
# above and by tests/unit/test-iscsi-*.c).
. "$TESTS_SRCDIR/lib.sh"
need iscsi-ls iscsi-inq iscsi-readcapacity16 iscsi-test-cu

make_raw "$T/disk.raw" 64
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add a --mac 52:54:00:12:34:56 --vdisk golden --cache server >/dev/null
df device add b --mac 52:54:00:00:00:0b --vdisk golden >/dev/null
printf 'initiatorsecret1\n' >"$T/s1"
printf 'targetsecret-22\n' >"$T/s2"
printf 'short\n' >"$T/s3"
df device set b --chap-user userb --chap-secret-file "$T/s1" \
  --mutual-secret-file "$T/s2" >/dev/null
if df device set b --chap-user userb --chap-secret-file "$T/s3" 2>/dev/null; then
  fail "a 5-byte CHAP secret was accepted"
fi
if df device set b --chap-user userb --chap-secret-file "$T/s1" \
     --mutual-secret-file "$T/s1" 2>/dev/null; then
  fail "mutual secret equal to the initiator secret was accepted"
fi
start_streamsvc --iscsi-listen 127.0.0.1:0
P=$(iscsi_port)
[ -n "$P" ] || fail "no iSCSI listener"
H=127.0.0.1:$P
IQN=iqn.2026-11.org.diskfarm

# discovery without CHAP: a and the vdisk, never b
out=$(timeout 30 iscsi-ls -s "iscsi://$H")
echo "$out" | grep -q "Target:$IQN:a " || fail "discovery misses a"
echo "$out" | grep -q "Target:$IQN:vdisk.golden " || fail "discovery misses the vdisk"
echo "$out" | grep -q "Lun:1 " || fail "REPORT LUNS does not list LUN 1"
if echo "$out" | grep -q "Target:$IQN:b "; then fail "discovery shows CHAP device b"; fi
# discovery with b's CHAP credentials shows b too
timeout 30 iscsi-ls -s "iscsi://userb%initiatorsecret1@$H" | grep -q "Target:$IQN:b " \
  || fail "CHAP discovery misses b"
pass "SendTargets shows only what the initiator may reach"

timeout 30 iscsi-inq "iscsi://$H/$IQN:a/1" | grep -q 'Vendor:DISKFARM' || fail "iscsi-inq"
timeout 30 iscsi-readcapacity16 "iscsi://$H/$IQN:52-54-00-12-34-56/1" \
  | grep -q 'Total size:67108864' || fail "readcapacity16 by MAC"
timeout 30 iscsi-inq -e 1 -c 0x83 "iscsi://$H/$IQN:vdisk.golden/1" >/dev/null \
  || fail "vdisk target VPD 0x83"
pass "iscsi-inq, iscsi-readcapacity16, MAC and vdisk targets"

# CHAP: one-way ok, wrong secret refused, no CHAP refused; mutual both ways
timeout 30 iscsi-inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM \
  || fail "one-way CHAP login"
timeout 30 iscsi-inq "iscsi://userb%wrongsecret12@$H/$IQN:b/1" >/dev/null 2>&1 \
  && fail "wrong CHAP secret accepted"
timeout 30 iscsi-inq "iscsi://$H/$IQN:b/1" >/dev/null 2>&1 \
  && fail "CHAP device reached without CHAP"
timeout 30 iscsi-inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1?target_user=$IQN:b&target_password=targetsecret-22" \
  | grep -q DISKFARM || fail "mutual CHAP login"
timeout 30 iscsi-inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1?target_user=$IQN:b&target_password=wrongtarget123" \
  >/dev/null 2>&1 && fail "initiator accepted a wrong mutual CHAP answer"
grep -q 'initiatorsecret1\|targetsecret-22' "$T/streamsvc.log" && fail "secret in the log"
pass "CHAP one-way and mutual"

# The whole iscsi-test-cu suite, once, in one run (issue 9): whatever a
# test leaves behind (reservations, registrations, written blocks, a
# test's own PDU hooks) reaches the tests after it, as families run one
# by one never showed.  Destructive: device a's cache only.  Normal mode
# names each failed test ("Suite S, Test T had failures:").
# Its exit status is non-zero when a test failed: judged below, test by
# test; only a timeout (124) or a crash (>= 128) is fatal here.
rc=0
timeout 240 iscsi-test-cu -n --dataloss -t ALL "iscsi://$H/$IQN:a/1" >"$T/cu.log" 2>&1 \
  || rc=$?
[ "$rc" -lt 124 ] || { tail -20 "$T/cu.log"; fail "iscsi-test-cu -t ALL did not finish (rc $rc)"; }
read -r _ total ran passed failed _ < <(grep -E '^ +tests ' "$T/cu.log") \
  || { tail -20 "$T/cu.log"; fail "no CUnit summary"; }
skips=$(sed -n '/CUnit - A unit testing/,$p' "$T/cu.log" | grep -o '\[SKIPPED\]' | wc -l)
echo "iscsi-test-cu -t ALL: $total tests, $ran run, $passed passed, $failed failed, $skips skipped inside"
echo "skip reasons (commands or features this target does not offer, or -S/multipath not given):"
sed -n '/CUnit - A unit testing/,$p' "$T/cu.log" | grep -o '\[SKIPPED\][^.]*' | sort | uniq -c | sort -rn
[ "$ran" = "$total" ] || fail "iscsi-test-cu ran $ran of $total tests"
[ "$failed" = 0 ] || {
  grep -A3 'had failures' "$T/cu.log" | head -40
  fail "iscsi-test-cu -t ALL: $failed test(s) failed"
}
pass "iscsi-test-cu -t ALL: 0 failures"

# the base never changed; a's writes live in a's cache only
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri vdisk/golden)" >/dev/null \
  || fail "vdisk changed"
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri device/b)" >/dev/null \
  || fail "device b sees a's writes"
pass "iscsi-test-cu: base and other devices untouched"
