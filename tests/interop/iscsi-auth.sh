#!/bin/bash
# iSCSI access policy (DESIGN.md "Trust model") with libiscsi's tools:
# `farm set iscsi-chap required` refuses device-target logins without CHAP
# (a clear login reject and a log line), binds each device target to its
# boot script's InitiatorName (device set --iscsi-initiator changes it),
# lists no device target to discovery without CHAP, and a CHAP guessing
# loop from one address is locked out while another address still logs in.
. "$TESTS_SRCDIR/lib.sh"
need iscsi-ls iscsi-inq python3

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add a --mac 52:54:00:00:00:0a --vdisk golden >/dev/null
df device add b --mac 52:54:00:00:00:0b --vdisk golden >/dev/null
printf 'initiatorsecret1\n' >"$T/s1"
df device set b --chap-user userb --chap-secret-file "$T/s1" >/dev/null
start_streamsvc --iscsi-listen 127.0.0.1:0
P=$(iscsi_port)
[ -n "$P" ] || fail "no iSCSI listener"
H=127.0.0.1:$P
IQN=iqn.2026-11.org.diskfarm
inq() { timeout 30 iscsi-inq "$@" 2>&1; }

# optional (the default): a is open, b needs CHAP, any initiator name
inq "iscsi://$H/$IQN:a/1" | grep -q DISKFARM || fail "optional: a without CHAP"
inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM || fail "optional: b with CHAP"
timeout 30 iscsi-ls -s "iscsi://$H" | grep -q "Target:$IQN:a " || fail "optional: discovery misses a"
pass "iscsi-chap optional: as before"

out=$(df farm set iscsi-chap sometimes 2>&1) && fail "iscsi-chap sometimes accepted"
echo "$out" | grep -q "iscsi-chap must be required or optional, not 'sometimes'" || fail "bad value: $out"
df farm set iscsi-chap required >/dev/null
json farm show
jcheck "$T/j.json" "d['iscsi_chap'] == 'required'"
json device show b
jcheck "$T/j.json" "d['iscsi_chap_required'] is True" "d['iscsi_initiator'] == '$IQN:b'"

# no CHAP: refused with "authentication failure", and said why in the log
out=$(inq "iscsi://$H/$IQN:a/1") && fail "required: a logged in without CHAP"
grep -q "iSCSI login from 127.0.0.1:[0-9]* (.*) refused (0x0201): farm policy iscsi-chap is required and this device has no CHAP credentials" "$T/streamsvc.log" ||
  fail "no log line for a's refusal"
inq "iscsi://$H/$IQN:b/1" >/dev/null && fail "required: b logged in without CHAP"
pass "iscsi-chap required: logins without CHAP refused (0x0201), logged"

# the initiator binding: libiscsi's own name is not b's boot script's
out=$(inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1") && fail "b reached with iscsi-inq's default InitiatorName"
grep -q "refused (0x0202): InitiatorName iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq is not the one this device's target accepts ($IQN:b" "$T/streamsvc.log" ||
  fail "no log line for the wrong IQN"
inq -i "$IQN:b" "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM || fail "b with its IQN and CHAP"
inq -i "$IQN:B" "iscsi://userb%initiatorsecret1@$H/$IQN:52-54-00-00-00-0b/1" | grep -q DISKFARM ||
  fail "b by MAC, IQN in another case"
inq -i "$IQN:b" "iscsi://userb%wrongsecret12@$H/$IQN:b/1" >/dev/null && fail "right IQN, wrong secret"
df device set b --iscsi-initiator iqn.1991-05.com.microsoft:pc-b >/dev/null
inq -i iqn.1991-05.com.microsoft:pc-b "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM ||
  fail "b with the IQN set by device set"
inq -i "$IQN:b" "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" >/dev/null && fail "old IQN after device set"
out=$(df device set b --iscsi-initiator 'not an iqn' 2>&1) && fail "bad IQN accepted"
echo "$out" | grep -q "iSCSI initiator 'not an iqn': an iSCSI name starts with iqn., eui. or naa." || fail "bad IQN: $out"
df device set b --iscsi-initiator any >/dev/null
inq "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM || fail "b with --iscsi-initiator any"
df device set b --iscsi-initiator default >/dev/null
json device show b
jcheck "$T/j.json" "d['iscsi_initiator'] == '$IQN:b'"
pass "initiator binding: wrong IQN refused (0x0202), right IQN ok; set, any, default"

# discovery without CHAP lists the vdisk (inspection) target only
out=$(timeout 30 iscsi-ls -s "iscsi://$H")
echo "$out" | grep -q "Target:$IQN:vdisk.golden " || fail "required: discovery misses the vdisk"
echo "$out" | grep -q "Target:$IQN:[ab] " && fail "required: discovery without CHAP lists a device: $out"
timeout 30 iscsi-ls -s "iscsi://userb%initiatorsecret1@$H" | grep -q "Target:$IQN:b " ||
  fail "required: CHAP discovery misses b"
inq "iscsi://$H/$IQN:vdisk.golden/1" | grep -q DISKFARM || fail "vdisk target under required"
pass "discovery: without CHAP the vdisk target only, with b's CHAP b too"

# a guessing loop from 127.0.0.2, bounded (60 attempts, 8 s): with a name
# the target does not accept, not one guess is judged...
python3 "$TESTS_SRCDIR/iscsi-guess.py" 127.0.0.1 "$P" 127.0.0.2 "$IQN:b" userb 3 8 >"$T/g0.json" ||
  fail "guess loop"
jcheck "$T/g0.json" "d['evaluated'] == 0" "d['other'] == 3"
# ...with b's own name, locked out after 5 wrong answers; 127.0.0.1
# still logs in meanwhile
python3 "$TESTS_SRCDIR/iscsi-guess.py" 127.0.0.1 "$P" 127.0.0.2 "$IQN:b" userb 60 8 "$IQN:b" >"$T/guess.json" ||
  fail "guess loop"
cat "$T/guess.json"
jcheck "$T/guess.json" "d['evaluated'] == 5" "d['refused_early'] == d['attempts'] - 5" "d['attempts'] >= 20"
inq -i "$IQN:b" "iscsi://userb%initiatorsecret1@$H/$IQN:b/1" | grep -q DISKFARM ||
  fail "another address could not log in during the lockout"
python3 "$TESTS_SRCDIR/iscsi-guess.py" 127.0.0.1 "$P" 127.0.0.2 "$IQN:b" userb 1 5 "$IQN:b" >"$T/g2.json"
jcheck "$T/g2.json" "d['refused_early'] == 1"
grep -q "CHAP user or response wrong; 5 failures from 127.0.0.2: its logins are refused for 10 s (rate limit" "$T/streamsvc.log" ||
  fail "no lockout log line"
n=$(grep -c "iSCSI login from 127.0.0.2:.*CHAP user or response wrong" "$T/streamsvc.log")
[ "$n" -eq 5 ] || fail "$n CHAP log lines for the guessing address (want 5: the lockout silences the rest)"
grep -q initiatorsecret1 "$T/streamsvc.log" && fail "secret in the log"
pass "CHAP guessing: 5 guesses judged of $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["attempts"])' "$T/guess.json"), then refused at once; 127.0.0.1 unaffected"
