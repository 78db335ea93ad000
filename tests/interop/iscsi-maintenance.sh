#!/bin/bash
# iSCSI and the maintenance version's one writer: a second initiator is
# refused while a session is live, but a new login of the same
# InitiatorName (the machine's OS after its firmware's sanboot, or after a
# reset: nothing closed the old connection) replaces the old session, whose
# acknowledged write and flush survive into the new one and the seal.
. "$TESTS_SRCDIR/lib.sh"
need iscsi-inq qemu-io python3

init_vdisk g 16
df device add m --mac 52:54:00:00:00:51 --vdisk g --type maintenance >/dev/null
df version new g >/dev/null 2>&1
start_streamsvc --iscsi-listen 127.0.0.1:0
P=$(iscsi_port)
[ -n "$P" ] || fail "no iSCSI listener"
IQN=iqn.2026-11.org.diskfarm
I1=$IQN:m I2=iqn.2000-01.test:other

# the firmware's session: a write and a flush, then silence (max 60 s)
python3 "$TESTS_SRCDIR/iscsi-hold.py" 127.0.0.1 "$P" "$I1" "$IQN:m" 800000000001 0x5a 60 \
  >"$T/hold.out" 2>&1 &
holder=$!
_df_pids="$_df_pids $holder"
for _ in $(seq 100); do grep -q ready "$T/hold.out" && break; sleep 0.1; done
grep -q ready "$T/hold.out" || { cat "$T/hold.out"; fail "the holder's write and flush"; }

if timeout 20 iscsi-inq -i "$I2" "iscsi://127.0.0.1:$P/$IQN:m/1" >"$T/inq2.out" 2>&1; then
  fail "another initiator's login was accepted beside the maintenance session"
fi
grep -q "one maintenance session at a time" "$T/streamsvc.log" ||
  fail "the refusal does not say why"
grep -q "closed" "$T/hold.out" && fail "a refused login closed the live session"
pass "another initiator is refused while the maintenance session is live"

timeout 20 iscsi-inq -i "$I1" "iscsi://127.0.0.1:$P/$IQN:m/1" >"$T/inq1.out" 2>&1 ||
  { cat "$T/inq1.out"; fail "the same initiator's new login was refused"; }
for _ in $(seq 100); do grep -q closed "$T/hold.out" && break; sleep 0.1; done
grep -q "closed after" "$T/hold.out" || { cat "$T/hold.out"; fail "the old session stayed open"; }
wait "$holder" || fail "the holder failed"
grep -q "replaced by a new login of the same initiator" "$T/streamsvc.log" ||
  fail "the log does not say the old session was replaced"
pass "a new login of the same initiator replaces the old session ($(cat "$T/hold.out" | tail -1))"

qemu-io -f raw -r -c "read -P 0x5a 0 512" "$(uri device/m)" | grep -q "read 512/512" ||
  fail "the replaced session's acknowledged write is lost"
stop_streamsvc
df version seal g >/dev/null || fail "version seal"
start_streamsvc
qemu-io -f raw -r -c "read -P 0x5a 0 512" "$(uri vdisk/g@1)" | grep -q "read 512/512" ||
  fail "the sealed version lacks the replaced session's write"
pass "the acknowledged write survives the replacement and the seal"
