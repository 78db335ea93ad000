#!/bin/bash
# Least privilege, end to end, as root: `diskfarm init` on a fresh
# directory gives the farm to the diskfarm user (setgid 2750 directories,
# 0640 files, nothing for others); streamsvc and bootstrapsvc, started as
# root with their default drop, bind (bootstrapsvc its real ports 67, 69,
# 80 and 4011 inside a network namespace made here), then run as diskfarm
# with no capability, and serve (nbdinfo, nbdsh, curl).  Console writes
# as root afterwards (vdisk import, device add) leave files the running
# streamsvc opens and writes through its cache.
. "$(dirname "$0")/lib.sh"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
[ "$(id -u)" = 0 ] || skip "needs root"
need nbdinfo nbdsh curl ip

NS=dfpriv$$
ip netns add "$NS" 2>/dev/null || skip "cannot create a network namespace"
trap 'rc=$?; ip netns del "$NS" 2>/dev/null; (exit $rc); df_cleanup' EXIT
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up

# ---- init -------------------------------------------------------------------
df init >/dev/null
getent passwd diskfarm >/dev/null || fail "init as root did not create the diskfarm user"
getent group diskfarm >/dev/null || fail "init as root did not create the diskfarm group"
UID_DF=$(id -u diskfarm) GID_DF=$(getent group diskfarm | cut -d: -f3)
[ "$(stat -c '%U:%G %a' "$FARM")" = "diskfarm:diskfarm 2750" ] ||
  fail "farm directory: $(stat -c '%U:%G %a' "$FARM"), not diskfarm:diskfarm 2750"
for d in store cache boot run; do
  [ "$(stat -c '%U:%G %a' "$FARM/$d")" = "diskfarm:diskfarm 2750" ] ||
    fail "$d/: $(stat -c '%U:%G %a' "$FARM/$d")"
done
[ -n "$DF_DB_CONF" ] || [ "$(stat -c '%U:%G %a' "$FARM/farm.db")" = "diskfarm:diskfarm 640" ] ||
  fail "farm.db: $(stat -c '%U:%G %a' "$FARM/farm.db")"
pass "init as root: farm owned by diskfarm:diskfarm, setgid 2750 directories, farm.db 0640"

make_raw "$T/golden.raw" 8
df vdisk import golden "$T/golden.raw" >/dev/null
df device add pc01 --mac 52:54:00:12:34:56 --vdisk golden >/dev/null

# ---- daemons, started as root with their default drop ------------------------
SOCK=$FARM/run/nbd.sock
ip netns exec "$NS" "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$SOCK" \
  --iscsi-listen 127.0.0.1:3260 --admin-listen 127.0.0.1:8001 >"$T/streamsvc.log" 2>&1 &
SS_PID=$!
_df_pids="$_df_pids $SS_PID"
for _ in $(seq 100); do grep -q 'running as' "$T/streamsvc.log" && break; sleep 0.1; done
grep -q 'running as diskfarm' "$T/streamsvc.log" || { cat "$T/streamsvc.log"; fail "streamsvc did not drop to diskfarm"; }
df server add ss1 --address 127.0.0.1 --admin-port 8001 --iscsi-port 3260 >/dev/null

BS_LOG=$T/bootstrapsvc.log
ip netns exec "$NS" "$BOOTSTRAPSVC" --farm "$FARM" --address 127.0.0.1 --health-interval 300 >"$BS_LOG" 2>&1 &
BS_PID=$!
_df_pids="$_df_pids $BS_PID"
for _ in $(seq 100); do grep -q 'is now healthy' "$BS_LOG" && break; sleep 0.1; done
grep -q 'ss1 is now healthy' "$BS_LOG" || { cat "$BS_LOG"; fail "bootstrapsvc did not see ss1 healthy"; }
grep -q 'http listening on http://127.0.0.1:80$' "$BS_LOG" || { cat "$BS_LOG"; fail "bootstrapsvc not on port 80"; }
grep -q 'proxydhcp listening on ports 67 and 4011' "$BS_LOG" || fail "proxydhcp not on 67/4011"

# /proc/PID/status: every uid and gid is diskfarm's, no capability at all
check_status() { # NAME PID
  local st=/proc/$2/status
  echo "$1: $(grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb):' "$st" | tr -s '\t' ' ' | paste -sd ';')"
  [ "$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$st")" = "$UID_DF $UID_DF $UID_DF $UID_DF" ] ||
    fail "$1: Uid is not diskfarm's ($UID_DF): $(grep ^Uid: "$st")"
  [ "$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "$st")" = "$GID_DF $GID_DF $GID_DF $GID_DF" ] ||
    fail "$1: Gid is not diskfarm's ($GID_DF): $(grep ^Gid: "$st")"
  for c in CapPrm CapEff CapAmb CapInh; do
    [ "$(awk -v c="$c:" '$1 == c { print $2 }' "$st")" = 0000000000000000 ] ||
      fail "$1: $c is $(grep "^$c:" "$st")"
  done
}
check_status streamsvc "$SS_PID"
check_status bootstrapsvc "$BS_PID"
pass "streamsvc and bootstrapsvc run as diskfarm ($UID_DF:$GID_DF), CapEff/CapPrm/CapAmb 0"

# ---- they serve --------------------------------------------------------------
[ "$(nbdinfo --size "nbd+unix:///vdisk/golden?socket=$SOCK")" = 8388608 ] || fail "nbdinfo vdisk/golden"
nbdsh -u "nbd+unix:///device/pc01?socket=$SOCK" \
  -c 'h.pwrite(b"P" * 4096, 65536); assert h.pread(4096, 65536) == b"P" * 4096' ||
  fail "write + read back through pc01's cache"
# The script URL of a real ProxyDHCP answer (port 67): its one-time token
# starts a new generation, so the dropped process writes farm.db.
gen_pc01() { df --json device show pc01 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p' | head -1; }
g0=$(gen_pc01)
TU=$(in_ns python3 "$(dirname "$0")/dhcp-client.py" url 127.0.0.1 67 52:54:00:12:34:56 |
  sed 's|\${net0/mac}|52:54:00:12:34:56|; s|\${uuid}|1|')
case "$TU" in *"&token="*) ;; *) fail "no script URL with a token from ProxyDHCP on 67: $TU" ;; esac
in_ns curl -sS "$TU" -o "$T/s1" || fail "curl boot.ipxe"
grep -q '^sanboot iscsi:127.0.0.1::3260:1:iqn.2026-11.org.diskfarm:pc01' "$T/s1" ||
  { cat "$T/s1" "$BS_LOG"; fail "boot.ipxe has no sanboot for pc01"; }
[ "$(gen_pc01)" -eq $((g0 + 1)) ] || fail "boot.ipxe with a token after the drop: generation $g0 -> $(gen_pc01)"
pass "after the drop: NBD read, NBD write through the cache, boot.ipxe over HTTP port 80 (new generation in farm.db)"

# ---- console writes as root, then the running daemon uses what they made ----
make_raw "$T/second.raw" 4
df vdisk import second "$T/second.raw" >/dev/null
df device add pc02 --mac 52:54:00:12:34:57 --vdisk second --cache server-persistent >/dev/null
[ "$(nbdinfo --size "nbd+unix:///vdisk/second?socket=$SOCK")" = 4194304 ] ||
  fail "streamsvc cannot read the vdisk the console imported as root"
nbdsh -u "nbd+unix:///device/pc02?socket=$SOCK" \
  -c 'h.pwrite(b"Q" * 8192, 0); h.flush(); assert h.pread(8192, 0) == b"Q" * 8192' ||
  fail "streamsvc cannot write pc02's persistent cache"
[ -n "$(ls -A "$FARM/cache/pc02")" ] || fail "no persistent cache file for pc02"
pass "console as root (vdisk import, device add) -> streamsvc reads the new vdisk and writes pc02's persistent cache"

# ---- the farm: no world bits, everything the diskfarm user's ------------------
world=$(find "$FARM" -perm /o+w)
[ -z "$world" ] || fail "world-writable in the farm: $world"
others=$(find "$FARM" -perm /o+rwx ! -type l)
[ -z "$others" ] || fail "entries open to others: $others"
foreign=$(find "$FARM" \( ! -user diskfarm -o ! -group diskfarm \) -printf '%p %u:%g\n')
[ -z "$foreign" ] || fail "entries not owned by diskfarm:diskfarm: $foreign"
pass "farm: nothing world-writable or open to others; every entry diskfarm:diskfarm"

# ---- a farm it cannot use after the drop: one precise line -------------------
chown root:root "$FARM/cache"
out=$("$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/y.sock" --admin-listen none 2>&1) &&
  fail "streamsvc started on a cache/ diskfarm cannot write"
echo "$out" | tail -1 | grep -q "running as diskfarm, cannot write $FARM/cache" ||
  fail "no precise error: $out"
chown diskfarm:diskfarm "$FARM/cache"
pass "a cache/ diskfarm cannot write: streamsvc refuses to start, one precise line"

kill -TERM "$SS_PID"; wait "$SS_PID" || fail "streamsvc (dropped) did not exit 0 on SIGTERM"
[ ! -e "$SOCK" ] || fail "streamsvc left its socket in run/"
pass "SIGTERM: clean exit as diskfarm, socket removed"
