#!/bin/bash
# Dead peers (issue 9): clients that vanish without a FIN are dropped by
# streamsvc within the configured time; live idle clients are kept.
#
#   netns SRV: streamsvc on 10.79.0.1 (NBD 10809, iSCSI 3260)
#   netns CLI: 10.79.0.2, veth to SRV; nbdsh (NBD, idle) and qemu-io
#              (iSCSI through libiscsi, idle) connected to streamsvc
#
# 1. Both clients stay connected while idle for longer than the NOP-In
#    interval and the keepalive time (pings and probes are answered).
# 2. The client's link goes down (its packets are dropped, no FIN, no
#    RST: a reset or powered-off machine).  The iSCSI connection must go
#    within NOP interval + timeout (+2 s: the 1 s tick, polling) with the
#    NOP-In message, the NBD one within --tcp-keepalive (+2 s).
# DEAD_PEER_KEEPALIVE / DEAD_PEER_NOP_INTERVAL / DEAD_PEER_NOP_TIMEOUT
# choose the settings (default 6 / 1 / 2 to keep the test short; run with
# 30 / 10 / 15 to measure streamsvc's defaults).  Root only (77 otherwise).
. "$(dirname "$0")/lib.sh"
need ip ss nbdsh qemu-io qemu-img
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
KA=${DEAD_PEER_KEEPALIVE:-6}
NOPI=${DEAD_PEER_NOP_INTERVAL:-1}
NOPT=${DEAD_PEER_NOP_TIMEOUT:-2}

NS=dfdp$$
SRV=${NS}srv CLI=${NS}cli
ip netns add "$SRV" 2>/dev/null || skip "cannot create network namespaces"
ip netns add "$CLI"
CLIENTS=""
ns_cleanup() {
  local rc=$?
  set +e
  for p in $CLIENTS; do kill -KILL "$p" 2>/dev/null; done
  # the namespaces go once their last process exits
  ip netns del "$SRV"; ip netns del "$CLI"
  (exit "$rc"); df_cleanup   # streamsvc: SIGTERM; exits with rc
}
trap ns_cleanup EXIT
ip link add dpv0 netns "$SRV" type veth peer name dpv1 netns "$CLI"
ip -n "$SRV" addr add 10.79.0.1/24 dev dpv0
ip -n "$CLI" addr add 10.79.0.2/24 dev dpv1
for n in "$SRV" "$CLI"; do ip -n "$n" link set lo up; done
ip -n "$SRV" link set dpv0 up
ip -n "$CLI" link set dpv1 up

df init >/dev/null
qemu-img create -q -f raw "$T/disk.img" 16M
df vdisk import golden "$T/disk.img" >/dev/null
ip netns exec "$SRV" "$STREAMSVC" --farm "$FARM" --verbose \
  --nbd-listen 10.79.0.1:10809 --iscsi-listen 10.79.0.1:3260 \
  --admin-listen none --tcp-keepalive "$KA" \
  --iscsi-nop-interval "$NOPI" --iscsi-nop-timeout "$NOPT" >"$T/streamsvc.log" 2>&1 &
SS_PID=$!
_df_pids="$_df_pids $SS_PID"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/streamsvc.log" && break; sleep 0.1; done
grep -q 'iscsi listening' "$T/streamsvc.log" || fail "streamsvc did not start"

# established PORT: connections streamsvc holds on its port PORT
established() {
  ip netns exec "$SRV" ss -Htn state established "( sport = :$1 )" | wc -l
}
wait_established() { # PORT WHAT
  for _ in $(seq 100); do [ "$(established "$1")" -ge 1 ] && return; sleep 0.1; done
  grep -q "Unknown protocol 'iscsi'" "$T/$2.log" && skip "qemu without iSCSI (qemu-block-extra)"
  fail "$2 did not connect: $(cat "$T/$2.log")"
}

# Idle clients: nbdsh sleeps on an open connection; qemu-io waits on a
# stdin that never ends (its event loop runs libiscsi meanwhile).
ip netns exec "$CLI" nbdsh -u nbd://10.79.0.1/vdisk/golden \
  -c 'import time; time.sleep(600)' >"$T/nbdsh.log" 2>&1 &
CLIENTS="$CLIENTS $!"
mkfifo "$T/qio.in"
ip netns exec "$CLI" qemu-io -r -f raw \
  "iscsi://10.79.0.1:3260/iqn.2026-11.org.diskfarm:vdisk.golden/1" \
  <"$T/qio.in" >"$T/qemu-io.log" 2>&1 &
CLIENTS="$CLIENTS $!"
exec 9>"$T/qio.in"   # held open: qemu-io's stdin never ends
echo "read 0 512" >&9
wait_established 10809 nbdsh
wait_established 3260 qemu-io

# ---- 1. live idle clients are kept ----------------------------------------------
keep=$(( KA > NOPI + NOPT ? KA : NOPI + NOPT ))
sleep $((keep + 2))
[ "$(established 10809)" -ge 1 ] || fail "idle live NBD client dropped"
[ "$(established 3260)" -ge 1 ] || fail "idle live iSCSI client dropped: $(tail -5 "$T/streamsvc.log")"
# qemu's iSCSI driver sends a NOP-Out of its own every 5 s: only a shorter
# interval finds the session idle (and proves libiscsi answers ours).
if [ "$NOPI" -gt 0 ] && [ "$NOPI" -lt 5 ]; then
  grep -q "NOP-In TTT" "$T/streamsvc.log" || fail "no NOP-In sent to the idle iSCSI session"
fi
pass "idle live clients kept for $((keep + 2)) s (NOP-Ins answered, keepalive probes answered)"

# ---- 2. the client vanishes --------------------------------------------------------
ip -n "$CLI" link set dpv1 down
start=$(date +%s%N)
iscsi_ms="" nbd_ms=""
limit=$(( (KA > NOPI + NOPT ? KA : NOPI + NOPT) + 5 ))
while [ $(( ($(date +%s%N) - start) / 1000000000 )) -lt "$limit" ]; do
  now=$(( ($(date +%s%N) - start) / 1000000 ))
  [ -z "$iscsi_ms" ] && [ "$(established 3260)" -eq 0 ] && iscsi_ms=$now
  [ -z "$nbd_ms" ] && [ "$(established 10809)" -eq 0 ] && nbd_ms=$now
  [ -n "$iscsi_ms" ] && [ -n "$nbd_ms" ] && break
  sleep 0.2
done
echo "vanished peer dropped after: iSCSI ${iscsi_ms:-never} ms (NOP-In ${NOPI}+${NOPT} s), NBD ${nbd_ms:-never} ms (keepalive $KA s)"
[ -n "$iscsi_ms" ] || fail "vanished iSCSI peer still connected after $limit s"
[ -n "$nbd_ms" ] || fail "vanished NBD peer still connected after $limit s"
[ "$iscsi_ms" -le $(( (NOPI + NOPT + 2) * 1000 )) ] ||
  fail "iSCSI peer dropped after $iscsi_ms ms, want <= NOP interval + timeout + 2 s (ticks, polling)"
grep -q 'no answer to a NOP-In' "$T/streamsvc.log" || fail "iSCSI drop not logged as a NOP-In timeout"
[ "$nbd_ms" -le $(( (KA + 2) * 1000 )) ] ||
  fail "NBD peer dropped after $nbd_ms ms, want <= --tcp-keepalive $KA s + 2 s"
pass "vanished peers dropped: iSCSI by NOP-In in $iscsi_ms ms, NBD by TCP keepalive in $nbd_ms ms"
kill -TERM "$SS_PID"
wait "$SS_PID" || fail "streamsvc exited $? after dropping the dead peers"
