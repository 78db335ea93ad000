#!/bin/bash
# Admin HTTP access (DESIGN.md "Trust model"): over TCP every endpoint but
# /metrics and /v1/health needs the farm's bearer token (401 without it or
# with a wrong one, 200 with it); the UNIX socket (0660, the farm's group)
# needs none; the console finds the socket and the token by itself; the
# token is never logged.  Real clients: curl, nbdsh, the console.
. "$TESTS_SRCDIR/lib.sh"
need curl nbdsh python3 stat

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk golden >/dev/null
# diskfarm init made the token: farm.db holds it, readable by the group only
# (on PostgreSQL the database's own access rules keep it)
[ -n "$DF_DB_CONF" ] || [ "$(stat -c %a "$FARM/farm.db")" = 640 ] ||
  fail "farm.db mode $(stat -c %a "$FARM/farm.db")"
TOKEN=$(df farm admin-token)
[[ $TOKEN =~ ^[0-9a-f]{64}$ ]] || fail "admin token '$TOKEN' is not 64 hex digits"
start_streamsvc
export T ADMIN
[ "$ADMIN_TOKEN" = "$TOKEN" ] || fail "streamsvc made another token"

code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
# TCP without a token: only the two open endpoints answer
for p in /v1/sessions /nope /v1/sessions/../v1/sessions; do
  c=$(code "http://$ADMIN$p")
  [ "$c" = 401 ] || fail "GET $p without token: $c, not 401"
done
c=$(code -X POST "http://$ADMIN/v1/sessions")
[ "$c" = 401 ] || fail "POST /v1/sessions without token: $c, not 401"
curl -s -D - -o /dev/null "http://$ADMIN/v1/sessions" | grep -qi '^WWW-Authenticate: Bearer realm="diskfarm"' ||
  fail "401 without WWW-Authenticate: Bearer"
for p in /metrics /v1/health; do
  c=$(code "http://$ADMIN$p")
  [ "$c" = 200 ] || fail "GET $p without token: $c, not 200"
done
pass "TCP without a token: 401 on /v1/sessions, unknown paths, POST; 200 on /metrics, /v1/health"
for bad in "Bearer wrong" "Bearer ${TOKEN}0" "Bearer ${TOKEN:0:63}" "Basic $TOKEN" "$TOKEN"; do
  c=$(code -H "Authorization: $bad" "http://$ADMIN/v1/sessions")
  [ "$c" = 401 ] || fail "wrong token '${bad:0:12}...': $c, not 401"
done
pass "TCP with a wrong token: 401"
c=$(code -H "Authorization: Bearer $TOKEN" "http://$ADMIN/v1/sessions")
[ "$c" = 200 ] || fail "right token: $c"
python3 -c 'import json,sys; assert isinstance(json.load(open(sys.argv[1])), list)' "$T/body" ||
  fail "/v1/sessions with the token is not a JSON array"
c=$(code -H "Authorization: Bearer $TOKEN" "http://$ADMIN/nope")
[ "$c" = 404 ] || fail "unknown path with the token: $c, not 404"
pass "TCP with the right token: 200 (404 for an unknown path)"
grep -q "admin: refused GET /v1/sessions from 127.0.0.1: no token (401)" "$T/streamsvc.log" ||
  fail "no log line for the refusal"
grep -qF "$TOKEN" "$T/streamsvc.log" && fail "the token is in streamsvc's log"
[ "$(grep -c 'admin: refused' "$T/streamsvc.log")" -le 2 ] ||
  fail "refusals logged more than once in ${DF_ADMIN_REFUSAL_LOG_S:-10} s"
pass "refusals logged (rate-limited), token never"

# the UNIX socket: 0660 in the farm's group, no token asked
S=$FARM/run/admin.sock
[ -S "$S" ] || fail "no admin socket at $S"
[ "$(stat -c %a "$S")" = 660 ] || fail "socket mode $(stat -c %a "$S")"
[ "$(stat -c %u:%g "$S")" = "$(stat -c %u:%g "$FARM")" ] ||
  fail "socket owner $(stat -c %U:%G "$S"), farm's $(stat -c %U:%G "$FARM")"
[ "$(stat -c %G "$FARM")" = diskfarm ] || echo "note: farm group is $(stat -c %G "$FARM") (not root?)"
c=$(code --unix-socket "$S" "http://localhost/v1/sessions")
[ "$c" = 200 ] || fail "socket without token: $c"
pass "UNIX socket $(stat -c '%a %U:%G' "$S"): /v1/sessions without a token"

# the console, told nothing: finds this streamsvc by its socket, and by
# the server table over TCP with the token, and counts it once
nbdsh -u "$(uri device/pc01)" -c '
import json, os, subprocess
h.pread(512, 0)
env = dict(os.environ); env.pop("DISKFARM_ADMIN", None)
def sessions():
    r = subprocess.run([os.environ["DISKFARM"], "--farm", os.environ["DISKFARM_FARM"],
                        "--json", "session", "list"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    d = json.loads(r.stdout)
    assert d["answered_server_count"] == 1 and not d["unreachable"], d
    return [s for s in d["sessions"] if s.get("device") == "pc01"]
mine = sessions()
assert len(mine) == 1, mine
open(os.environ["T"] + "/via-socket", "w").write(mine[0]["address"])
subprocess.run([os.environ["DISKFARM"], "--farm", os.environ["DISKFARM_FARM"], "server",
                "add", "s1", "--address", "127.0.0.1", "--admin-port",
                os.environ["ADMIN"].rsplit(":", 1)[1]], check=True,
               stdout=subprocess.DEVNULL)
mine = sessions()
assert len(mine) == 1, mine    # socket and table row: one server
assert mine[0]["server"] == "s1", mine
' || fail "console without --admin or token"
grep -q "^unix:$S\$" "$T/via-socket" || fail "console did not use the socket: $(cat "$T/via-socket")"
pass "console: finds the socket, then s1 over TCP with the token, one session"
