#!/bin/bash
# iSCSI front end against libiscsi's tools: discovery (with and without
# CHAP), inquiry, capacity, one-way and mutual CHAP, a device reached by
# name and by MAC, read-only vdisk targets, and the iscsi-test-cu families
# of issue 3.  Families missing from the installed libiscsi are reported
# as skipped (libiscsi 1.19 has no iSCSI.iSCSINop, iSCSISendTargets or
# iSCSICHAP suites: NOP, SendTargets and CHAP are covered by the checks
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
P=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
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

# iscsi-test-cu families (destructive: device a's cache only)
families="SCSI.Inquiry SCSI.ReadCapacity10 SCSI.ReadCapacity16 SCSI.Read6
SCSI.Read10 SCSI.Read16 SCSI.Write10 SCSI.Write16 SCSI.TestUnitReady
SCSI.ReportLUNs SCSI.Unmap SCSI.WriteSame10 SCSI.WriteSame16 SCSI.ModeSense6
SCSI.Verify10 SCSI.Verify16 iSCSI.iSCSIcmdsn iSCSI.iSCSIdatasn
iSCSI.iSCSIResiduals iSCSI.iSCSINop iSCSI.iSCSISendTargets iSCSI.iSCSITMF
iSCSI.iSCSICHAP"
list=$(iscsi-test-cu --list)
bad=""
for f in $families; do
  if ! echo "$list" | grep -qx "$f"; then
    echo "skip: $f (not in this libiscsi's iscsi-test-cu)"
    continue
  fi
  if ! echo "$list" | grep -q "^$f\."; then
    echo "skip: $f (no tests in this libiscsi)"
    continue
  fi
  if timeout 600 iscsi-test-cu -d -s -t "$f" "iscsi://$H/$IQN:a/1" >"$T/cu.log" 2>&1 \
     && grep -qE 'tests +[0-9]+ +[0-9]+ +[0-9]+ +0 ' "$T/cu.log"; then
    echo "ok: $f $(grep -E '^ +tests ' "$T/cu.log" | tr -s ' ')"
  else
    echo "FAIL: $f"; grep -E 'FAILED|tests ' "$T/cu.log" | head -10
    bad="$bad $f"
  fi
done
[ -z "$bad" ] || fail "iscsi-test-cu families failed:$bad"

# the base never changed; a's writes live in a's cache only
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri vdisk/golden)" >/dev/null \
  || fail "vdisk changed"
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri device/b)" >/dev/null \
  || fail "device b sees a's writes"
pass "iscsi-test-cu families; base and other devices untouched"
