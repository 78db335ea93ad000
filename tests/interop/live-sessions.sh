#!/bin/bash
# Every session matches the farm (issue 9): `session list`, `device show`'s
# live sessions, the refusals of changes to a live device (and --force),
# `version new` starting the maintenance device's boot generation, one
# maintenance device per vDisk, and a farm that never counts another
# farm's sessions.  A real streamsvc with its admin API on 127.0.0.1:0,
# registered with `diskfarm server add`, and real NBD sessions held open by
# nbdsh.
. "$TESTS_SRCDIR/lib.sh"
need nbdsh python3

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add p1 --mac 52:54:00:00:09:01 --vdisk golden >/dev/null
df device add m1 --mac 52:54:00:00:09:02 --vdisk golden --type maintenance >/dev/null
start_streamsvc
APORT=${ADMIN##*:}
df server add s1 --address 127.0.0.1 --admin-port "$APORT" >/dev/null
# --admin names the same server: asked once.
export DISKFARM_ADMIN=$ADMIN

# hold DEVICE: an NBD session on device/DEVICE until $T/DEVICE.stop exists.
hold() {
  rm -f "$T/$1.ready" "$T/$1.stop"
  nbdsh -u "$(uri "device/$1")" -c "
import os, time
h.pread(512, 0)
open('$T/$1.ready', 'w').close()
for _ in range(1200):
    if os.path.exists('$T/$1.stop'):
        break
    time.sleep(0.1)
" >"$T/$1.hold.log" 2>&1 &
  _df_pids="$_df_pids $!"
  eval "HOLD_$1=$!"
  for _ in $(seq 100); do [ -e "$T/$1.ready" ] && return 0; sleep 0.1; done
  cat "$T/$1.hold.log"; fail "nbdsh did not open device/$1"
}
release() { # DEVICE
  touch "$T/$1.stop"
  eval "wait \$HOLD_$1" 2>/dev/null || true
}
# run_df: diskfarm with stdout in $T/out, stderr in $T/err, status in $rc.
run_df() { rc=0; df "$@" >"$T/out" 2>"$T/err" || rc=$?; }

# ---- nothing live --------------------------------------------------------
json session list
jcheck "$T/j.json" 'd["sessions"] == []' 'd["unreachable"] == []' \
  'd["ignored"] == []' 'd["answered_server_count"] == 1'
json device show p1
jcheck "$T/j.json" 'd["live"] is False' 'd["sessions"] == []'
pass "no session: session list empty, device not live"

# ---- a live production device ------------------------------------------
hold p1
json session list
jcheck "$T/j.json" 'len(d["sessions"]) == 1' \
  '(lambda s: s["server"] == "s1" and s["device"] == "p1" and s["proto"] == "nbd" and s["export"] == "device/p1" and s["address"] == "127.0.0.1:'"$APORT"'")(d["sessions"][0])' \
  'd["sessions"][0]["bytes_read"] >= 512' \
  'all(k in d["sessions"][0] for k in ("session", "client", "generation", "version", "cache", "started", "bytes_written"))'
# the binding streamsvc reports (older servers: absent, shown as null)
jcheck "$T/j.json" \
  '(lambda s: s["vdisk"] == "golden" and s["version"] == 0 and s["generation"] == 1 and s["cache"] == "server" and s["maintenance"] is False)(d["sessions"][0])'
SID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sessions"][0]["session"])' "$T/j.json")
run_df session list
[ "$rc" = 0 ] && grep -q "^s1 .* nbd .* device/p1 .* p1 " "$T/out" || { cat "$T/out" "$T/err"; fail "session list table"; }
json session list --device m1
jcheck "$T/j.json" 'd["sessions"] == []'
json session list --device 52:54:00:00:09:01
jcheck "$T/j.json" 'len(d["sessions"]) == 1'
run_df session list --device nosuch
[ "$rc" = 1 ] && grep -q "no device with name 'nosuch'" "$T/err" || fail "session list --device nosuch"
json device show p1
jcheck "$T/j.json" 'd["live"] is True' 'len(d["sessions"]) == 1' \
  'd["sessions"][0]["server"] == "s1" and d["sessions"][0]["session"] == '"$SID"
json device show m1
jcheck "$T/j.json" 'd["live"] is False'
run_df device show p1
grep -q "^live: *yes" "$T/out" && grep -q "live sessions:" "$T/out" || { cat "$T/out"; fail "device show p1 (people)"; }
pass "live session listed (session list, --device, device show)"

# refusals name the server and the session; nothing changes
want="device p1 is live on server s1 (127.0.0.1:$APORT, session $SID, nbd from "
for args in "set p1 --cache ram:64" "set p1 --type test" "set p1 --vdisk golden --type test" "remove p1"; do
  run_df device $args
  [ "$rc" = 1 ] || fail "device $args accepted while p1 is live"
  grep -qF "$want" "$T/err" && grep -q "stop it first or use --force" "$T/err" ||
    { cat "$T/err"; fail "device $args: message"; }
done
json device show p1
jcheck "$T/j.json" 'd["cache_mode"] == "server" and d["type"] == "production"'
# changes that leave the disk alone are allowed
df device set p1 --quota 1G >/dev/null || fail "device set --quota while live"
df device set p1 --cache server >/dev/null || fail "device set to the same cache"
pass "device set --cache/--type/--vdisk and remove refused while live"

# wait_not_live DEVICE: streamsvc's fence closes its sessions (~1 s).
wait_not_live() {
  for _ in $(seq 50); do
    df --json session list --device "$1" >"$T/j.json" 2>/dev/null
    python3 -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["sessions"]) != 0)' "$T/j.json" && return 0
    sleep 0.2
  done
  cat "$T/j.json"; fail "device $1 still live"
}

# reset stays allowed and says the live session is fenced
run_df device reset p1
[ "$rc" = 0 ] && grep -qF "are fenced: server s1 (127.0.0.1:$APORT, session $SID" "$T/out" ||
  { cat "$T/out" "$T/err"; fail "device reset while live"; }
wait_not_live p1
release p1
# --force goes ahead, and the server fences the session
hold p1
run_df device set p1 --cache ram:64 --force
[ "$rc" = 0 ] && grep -q "warning: --force: device p1 is live on server s1" "$T/err" ||
  { cat "$T/err"; fail "device set --force"; }
json device show p1
jcheck "$T/j.json" 'd["cache_mode"] == "ram:64"'
wait_not_live p1
release p1
pass "device reset allowed while live; --force proceeds; the server fences the session"

# ---- version new and the maintenance device ------------------------------
hold m1
run_df version new golden
[ "$rc" = 1 ] && grep -qF "vdisk golden: maintenance device m1 is live on server s1 (127.0.0.1:$APORT, session" "$T/err" ||
  { cat "$T/err"; fail "version new while m1 is live"; }
[ "$(df --json version list golden | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
  fail "refused version new created a version"
json device show m1
jcheck "$T/j.json" 'd["generation"] == 1'
json version new golden --force
jcheck "$T/j.json" 'd["version"] == 1 and d["state"] == "maintenance"'
json device show m1
jcheck "$T/j.json" 'd["generation"] == 2'
json device show p1
jcheck "$T/j.json" 'd["generation"] == 2'   # its own reset above, untouched here
json audit --limit 3
jcheck "$T/j.json" 'any(a["action"] == "device.generation" and a["object"] == "m1" and a["detail"] == {"generation": 2, "cause": "golden@1"} for a in d)'
release m1
pass "version new refused while the maintenance device is live; --force starts its generation"

# ---- one maintenance device per vDisk ------------------------------------
run_df device add m2 --mac 52:54:00:00:09:03 --vdisk golden --type maintenance
[ "$rc" = 1 ] && grep -q "vdisk 'golden' already has maintenance device 'm1'" "$T/err" ||
  { cat "$T/err"; fail "second maintenance device added"; }
run_df device set p1 --type maintenance
[ "$rc" = 1 ] && grep -q "vdisk 'golden' already has maintenance device 'm1'" "$T/err" ||
  { cat "$T/err"; fail "device set --type maintenance accepted"; }
df vdisk import other "$T/disk.raw" >/dev/null
df device add m3 --mac 52:54:00:00:09:04 --vdisk other --type maintenance >/dev/null ||
  fail "maintenance device of another vdisk refused"
run_df device set m3 --vdisk golden
[ "$rc" = 1 ] && grep -q "vdisk 'golden' already has maintenance device 'm1'" "$T/err" ||
  { cat "$T/err"; fail "maintenance device moved onto golden"; }
run_df device show m2
[ "$rc" = 1 ] || fail "m2 exists"
pass "one maintenance device per vDisk"

# ---- unreachable servers are reported, not fatal --------------------------
df server add s2 --address 127.0.0.1 --admin-port 1 >/dev/null
json session list
jcheck "$T/j.json" 'd["answered_server_count"] == 1' \
  'len(d["unreachable"]) == 1 and d["unreachable"][0]["server"] == "s2" and d["unreachable"][0]["address"] == "127.0.0.1:1"'
run_df session list
[ "$rc" = 0 ] && grep -q "warning: server s2 (127.0.0.1:1) not reachable" "$T/err" ||
  { cat "$T/err"; fail "unreachable server not reported"; }
df server remove s2 >/dev/null
# an --admin given explicitly that nothing answers is reported too
run_df session list --admin 127.0.0.1:1
[ "$rc" = 0 ] && grep -q "warning: 127.0.0.1:1 not reachable" "$T/err" ||
  { cat "$T/err"; fail "--admin unreachable not reported"; }
run_df session list --admin 127.0.0.1:0
[ "$rc" = 1 ] && grep -q "invalid admin address '127.0.0.1:0'" "$T/err" ||
  { cat "$T/err"; fail "--admin 127.0.0.1:0 accepted"; }
# [console] admin of diskfarm.conf is asked too; the default address, asked
# only because nothing names another, is not worth a warning
printf '[console]\nadmin=127.0.0.1:1\n' >"$T/df.conf"
rc=0; env -u DISKFARM_ADMIN "$DISKFARM" --farm "$FARM" --config "$T/df.conf" session list >/dev/null 2>"$T/err" || rc=$?
[ "$rc" = 0 ] && grep -q "warning: 127.0.0.1:1 not reachable" "$T/err" ||
  { cat "$T/err"; fail "[console] admin not asked"; }
printf '# nothing\n' >"$T/empty.conf"
rc=0; env -u DISKFARM_ADMIN "$DISKFARM" --farm "$FARM" --config "$T/empty.conf" --json session list >"$T/j.json" 2>"$T/err" || rc=$?
[ "$rc" = 0 ] && ! grep -q "127.0.0.1:8001 not reachable" "$T/err" || { cat "$T/err"; fail "warning about the default admin address"; }
jcheck "$T/j.json" 'd["answered_server_count"] == 1' 'all(u["server"] is not None for u in d["unreachable"])'
pass "unreachable server reported"

# ---- another farm's server is never counted --------------------------------
hold p1
B=$T/farmB
B_DB=$(farm_db farmb)
dfb() { "$DISKFARM" --farm "$B" ${B_DB:+--db "$B_DB"} "$@"; }
dfb init >/dev/null
dfb vdisk import golden "$T/disk.raw" >/dev/null
dfb device add p1 --mac 52:54:00:00:09:01 --vdisk golden >/dev/null
dfb server add sA --address 127.0.0.1 --admin-port "$APORT" >/dev/null
UA=$(df --json farm show | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
UB=$(dfb --json farm show | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
[ "$UA" != "$UB" ] || fail "two farms share a UUID"
rc=0; dfb --json version list golden >"$T/j.json" 2>"$T/err" || rc=$?
[ "$rc" = 0 ] || fail "farm B version list"
jcheck "$T/j.json" 'd[0]["sessions"] is None or d[0]["sessions"] == 0'
grep -qF "warning: ignoring server sA (127.0.0.1:$APORT): it serves farm $UA, not this farm ($UB)" "$T/err" ||
  { cat "$T/err"; fail "farm B: no warning about farm A's server"; }
dfb --json session list >"$T/j.json" 2>"$T/err"
jcheck "$T/j.json" 'd["sessions"] == []' 'd["answered_server_count"] == 0' \
  'len(d["ignored"]) == 1 and d["ignored"][0]["server"] == "sA"'
dfb --json device show p1 >"$T/j.json" 2>/dev/null
jcheck "$T/j.json" 'd["live"] is False'
dfb --json server show sA >"$T/j.json"
jcheck "$T/j.json" 'd["health"] == "unhealthy"' '"not this farm" in d["health_detail"]'
# farm B's change goes ahead: nothing of B is live (no server could be asked)
rc=0; dfb device remove p1 >/dev/null 2>"$T/err" || rc=$?
[ "$rc" = 0 ] && grep -q "no stream server of this farm could be asked whether device p1 is live" "$T/err" ||
  { cat "$T/err"; fail "farm B device remove"; }
# farm A still sees its session
json version list golden
jcheck "$T/j.json" 'd[0]["sessions"] == 1'
release p1
pass "farm B ignores farm A's server (version list, session list, device show, server show)"

for cmd in "session" "session list" "device set" "device remove" "version new"; do
  # shellcheck disable=SC2086
  "$DISKFARM" $cmd --help >"$T/out" 2>&1 || fail "diskfarm $cmd --help failed"
  grep -q "Example" "$T/out" && grep -q -- "--admin" "$T/out" ||
    fail "diskfarm $cmd --help: $(cat "$T/out")"
done
"$DISKFARM" device set --help | grep -q -- "--force" || fail "device set --help: no --force"
pass "--help"
