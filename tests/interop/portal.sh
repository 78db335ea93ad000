#!/bin/bash
# Floating iSCSI portals (issue 13): `diskfarm server portal-config`
# writes each server's keepalived.conf from the registry, and real
# keepalived (VRRP over a bridge in network namespaces made here) moves a
# server's portal to the survivor when its streamsvc dies.
#
#   netns L (LAN):  bridge br0 10.213.<n>.1 (the initiator side)
#   netns A, B:     eth0 (veth on br0) at .12 / .13, a streamsvc each
#                   (iSCSI on 0.0.0.0:3260: it accepts on a portal it
#                   adopts later; admin on its own address), keepalived
#                   from its generated config (own pid files, -n -l -D)
#   portals:        A .112, B .113
#
# 1. both configs: keepalived's own config check prints nothing; A is
#    MASTER of .112 and BACKUP of .113, priorities 200/150
# 2. each portal on its owner; iscsi-inq through .112 logs in on A
# 3. kill -9 A's streamsvc: B adopts .112 (time printed), A drops it;
#    iscsi-inq through .112 now logs in on B (a real iSCSI login on the
#    adopted address)
# 4. A's streamsvc back: .112 returns to A (preemption)
# Root only (network namespaces); 77 without keepalived, curl, iscsi-inq.
. "$(dirname "$0")/lib.sh"
need ip keepalived curl iscsi-inq python3
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
[ -x /usr/bin/curl ] || skip "the track script runs /usr/bin/curl"
id nobody >/dev/null 2>&1 && getent group nogroup >/dev/null ||
  skip "keepalived's scripts run as nobody:nogroup"
N=$(( $$ % 200 + 20 ))
NET=10.213.$N
NSP=dfpt$$
NS_L=${NSP}l NS_A=${NSP}a NS_B=${NSP}b
_pt_ns=""
pt_cleanup() {
  local ns
  for ns in $_pt_ns; do ip netns del "$ns" 2>/dev/null; done
}
# lib.sh's trap stops the daemons (by PID) first, then the namespaces go
trap 'rc=$?; pt_cleanup_pids; pt_cleanup; rm -rf "$T"; exit $rc' EXIT
pt_cleanup_pids() {
  local p
  for p in $_df_pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $_df_pids; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  [ -z "$_df_pg" ] || pg_stop "$_df_pg"
}
for ns in $NS_L $NS_A $NS_B; do
  ip netns add "$ns" 2>/dev/null || skip "cannot create network namespaces"
  _pt_ns="$_pt_ns $ns"
  ip -n "$ns" link set lo up
done
ip -n "$NS_L" link add br0 type bridge
ip -n "$NS_L" addr add "$NET.1/24" dev br0
ip -n "$NS_L" link set br0 up
for s in a b; do
  ns=${NSP}$s
  ip link add "v$s" netns "$NS_L" type veth peer name eth0 netns "$ns"
  ip -n "$NS_L" link set "v$s" master br0 up
  ip -n "$ns" link set eth0 up
done
ip -n "$NS_A" addr add "$NET.12/24" dev eth0
ip -n "$NS_B" addr add "$NET.13/24" dev eth0

# ---- farm: one DB for both servers (farm2's farm.db is farm's on SQLite)
df init >/dev/null
"$DISKFARM" --farm "$T/farm2" init >/dev/null
if [ -z "$DF_DB_CONF" ]; then
  rm -f "$T"/farm2/farm.db*
  ln -s ../farm/farm.db "$T/farm2/farm.db"
fi
rm -rf "$T/farm2/store"
ln -s ../farm/store "$T/farm2/store"
make_raw "$T/disk.raw" 8
df vdisk import golden "$T/disk.raw" >/dev/null
df server add sa --address "$NET.12" --portal "$NET.112" --admin-port 8001 >/dev/null
df server add sb --address "$NET.13" --portal "$NET.113" --admin-port 8001 >/dev/null

# ---- 1. the generated configs ------------------------------------------
for s in a b; do
  df server portal-config "s$s" --interface eth0 >"$T/k$s.conf" ||
    fail "portal-config s$s"
  # keepalived -t signals its process group when done: its own session
  ip netns exec "${NSP}$s" setsid -w keepalived -t -f "$T/k$s.conf" -l -n \
    >"$T/kt$s.out" 2>&1 || true
  [ ! -s "$T/kt$s.out" ] || { cat "$T/kt$s.out"; fail "keepalived -t finds fault with s$s's config"; }
done
python3 - "$T/ka.conf" "$NET" <<'PY' || fail "sa's config"
import re, sys
c, net = open(sys.argv[1]).read(), sys.argv[2]
inst = dict(re.findall(r"vrrp_instance diskfarm_(\w+) \{(.*?)\n\}", c, re.S))
assert set(inst) == {"sa", "sb"}, inst.keys()
assert "state MASTER" in inst["sa"] and "priority 200" in inst["sa"], inst["sa"]
assert "state BACKUP" in inst["sb"] and "priority 150" in inst["sb"], inst["sb"]
assert "%s.112 dev eth0" % net in inst["sa"] and "%s.113 dev eth0" % net in inst["sb"]
assert "http://%s.12:8001/v1/health" % net in c
PY
pass "portal-config: keepalived accepts both configs; sa MASTER of its portal, BACKUP of sb's"
df server portal-config nosuch --interface eth0 2>"$T/e1" && fail "portal-config of no server"
grep -q "no server named 'nosuch'" "$T/e1" || fail "no server: $(cat "$T/e1")"
df server add sc --address "$NET.14" >/dev/null
df server portal-config sc --interface eth0 2>"$T/e2" && fail "portal-config of a server without a portal"
grep -q "server sc has no portal" "$T/e2" || fail "no portal: $(cat "$T/e2")"
df server remove sc >/dev/null
pass "portal-config refuses an unknown server and one without a portal"

# ---- servers and keepalived ----------------------------------------------
start_ss() { # a|b FARM
  local s=$1 log=$T/ss$1.log ip
  ip=$NET.1$([ "$s" = a ] && echo 2 || echo 3)
  ip netns exec "${NSP}$s" "$STREAMSVC" --farm "$2" --nbd-listen "unix:$T/nbd$s.sock" \
    --iscsi-listen 0.0.0.0:3260 --admin-listen "$ip:8001" >>"$log" 2>&1 &
  eval "SS_$s=$!"
  _df_pids="$_df_pids $!"
  for _ in $(seq 100); do
    ip netns exec "${NSP}$s" curl -sf -o /dev/null "http://$ip:8001/v1/health" && return
    sleep 0.1
  done
  cat "$log"; fail "streamsvc s$s not healthy"
}
start_ss a "$FARM"
start_ss b "$T/farm2"
for s in a b; do
  mkdir -p "$T/run$s"
  ip netns exec "${NSP}$s" keepalived -f "$T/k$s.conf" -n -l -D --vrrp \
    -p "$T/run$s/keepalived.pid" -r "$T/run$s/vrrp.pid" >"$T/ka$s.log" 2>&1 &
  _df_pids="$_df_pids $!"
done
# holds NS ADDR: ADDR is on NS's eth0
holds() { ip -n "$1" -4 -o addr show dev eth0 | grep -q " $2/"; }
wait_holds() { # NS ADDR SECONDS
  local i
  for i in $(seq $(( $3 * 10 ))); do holds "$1" "$2" && return 0; sleep 0.1; done
  return 1
}
dump() { for s in a b; do echo "--- keepalived s$s"; tail -20 "$T/ka$s.log"; done; }

# ---- 2. each portal on its owner ---------------------------------------------
wait_holds "$NS_A" "$NET.112" 20 || { dump; fail "sa never took its portal"; }
wait_holds "$NS_B" "$NET.113" 20 || { dump; fail "sb never took its portal"; }
! holds "$NS_B" "$NET.112" || fail "both hold .112"
IQN=iqn.2026-11.org.diskfarm:vdisk.golden
inq() { ip netns exec "$NS_L" timeout 20 iscsi-inq "iscsi://$1:3260/$IQN/1"; }
logins() { grep -c "iSCSI login" "$T/ss$1.log" || true; }
la=$(logins a)
inq "$NET.112" | grep -q 'Vendor:DISKFARM' || fail "iscsi-inq through sa's portal"
[ "$(logins a)" -gt "$la" ] || fail "the login through .112 did not reach sa"
pass "each portal on its own server; iSCSI through .112 logs in on sa"

# ---- 3. kill -9 sa's streamsvc: sb adopts .112 ---------------------------------
kill -9 "$SS_a"
t0=$(date +%s.%N)
wait_holds "$NS_B" "$NET.112" 20 || { dump; fail "sb did not adopt .112"; }
took=$(echo "$(date +%s.%N) - $t0" | bc)
wait_holds "$NS_B" "$NET.113" 1 || fail "sb lost its own portal"
for _ in $(seq 50); do holds "$NS_A" "$NET.112" || break; sleep 0.1; done
! holds "$NS_A" "$NET.112" || fail "sa still holds .112 with its streamsvc dead"
printf 'portal takeover: sb holds .112 %.2f s after kill -9 of sa'"'"'s streamsvc\n' "$took"
lb=$(logins b)
ok=0
for _ in $(seq 20); do # the LAN's ARP entry follows the gratuitous ARP
  inq "$NET.112" 2>/dev/null | grep -q 'Vendor:DISKFARM' && { ok=1; break; }
  sleep 0.5
done
[ "$ok" = 1 ] || fail "iscsi-inq through .112 after the takeover"
[ "$(logins b)" -gt "$lb" ] || fail "the login through .112 did not reach sb"
pass "kill -9 sa's streamsvc: sb adopts .112 in $(printf %.2f "$took") s and serves iSCSI on it"

# ---- 4. sa back: its portal returns ------------------------------------------
start_ss a "$FARM"
wait_holds "$NS_A" "$NET.112" 20 || { dump; fail ".112 did not return to sa"; }
for _ in $(seq 50); do holds "$NS_B" "$NET.112" || break; sleep 0.1; done
! holds "$NS_B" "$NET.112" || fail "sb kept .112 after sa came back"
pass "sa's streamsvc back: .112 returns to sa"
