#!/bin/bash
# HTTP boot scripts with curl: a registered device gets a sanboot script
# listing only the healthy stream servers, least loaded first, with its
# initiator IQN; the one-time token of a real ProxyDHCP answer
# (dhcp-client.py) gets the CHAP secret and a new boot generation once, a
# fetch without it neither; an unknown MAC gets the "not registered" script
# or is auto-added (with a token, rate-limited); idle keep-alive and
# half-closed connections are closed; static files with Range.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bootstrap-lib.sh"
need curl python3
CLIENT=$(dirname "$0")/dhcp-client.py
# The script URL of a real ProxyDHCP answer for MAC $1, with the settings
# expanded as iPXE does (${net0/mac}, ${uuid}).
token_url() {
  python3 "$CLIENT" url 127.0.0.1 "$DHCP_PORT" "$1" |
    sed "s|\${net0/mac}|$1|; s|\${uuid}|1234|"
}
gen_of() { df --json device show "$1" | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p' | head -1; }

init_vdisk base 8
df collection add lab --vdisk base >/dev/null
df device add pc01 --mac 52:54:00:12:34:56 --vdisk base >/dev/null
cp /usr/lib/ipxe/undionly.kpxe "$FARM/boot/" 2>/dev/null || head -c 70000 /dev/urandom >"$FARM/boot/undionly.kpxe"

start_streamsvc
add_streamsvc_server ss1 3260
# ss2: registered but down (nothing listens on its admin port)
df server add ss2 --address 127.0.0.2 --admin-port 9 --iscsi-port 3261 >/dev/null
start_bootstrapsvc
wait_log "stream server ss1 is now healthy" || { cat "$BS_LOG"; fail "ss1 never healthy"; }
URL="http://127.0.0.1:$HTTP_PORT"
df server list >"$T/servers"
cat "$T/servers"
grep -q '^ss1 .* healthy ' "$T/servers" || fail "server list: ss1 not healthy"
grep -q '^ss2 .* unhealthy' "$T/servers" || fail "server list: ss2 not unhealthy"
df --json server show ss1 | grep -q '"health" : "healthy"' || fail "server show --json"
pass "server list/show report live health"

curl -sS -D "$T/h1" "$URL/boot.ipxe?mac=52:54:00:12:34:56&uuid=1234" -o "$T/s1"
cat "$T/s1"
head -1 "$T/s1" | grep -q '^#!ipxe' || fail "not an iPXE script"
grep -q '^set initiator-iqn iqn.2026-11.org.diskfarm:pc01$' "$T/s1" || fail "initiator IQN"
grep -q '^sanboot iscsi:127.0.0.1::3260:1:iqn.2026-11.org.diskfarm:pc01 || goto failed$' "$T/s1" ||
  fail "sanboot line should list ss1 only"
grep -q 127.0.0.2 "$T/s1" && fail "the down server is listed"
pass "script for pc01: initiator IQN, sanboot on the healthy server only"

# A floating portal (issue 13): the script names it instead of the
# server's address (health is still asked at the address); dropped again,
# the address comes back.  Views follow the DB at each health round.
df server set ss1 --portal 10.99.0.1 >/dev/null
for _ in $(seq 50); do
  curl -sS "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/sp"
  grep -q 'iscsi:10.99.0.1::' "$T/sp" && break
  sleep 0.2
done
grep -q '^sanboot iscsi:10.99.0.1::3260:1:iqn.2026-11.org.diskfarm:pc01 || goto failed$' "$T/sp" ||
  { cat "$T/sp"; fail "the script does not name ss1's portal"; }
df server list --no-health | grep -q '^ss1 .*10.99.0.1' || fail "server list does not show the portal"
df server set ss1 --portal 127.0.0.1 2>"$T/perr" && fail "a loopback portal was accepted"
grep -q "portal '127.0.0.1' cannot be a wildcard, loopback or multicast" "$T/perr" ||
  fail "loopback portal: $(cat "$T/perr")"
df server set ss1 --no-portal >/dev/null
for _ in $(seq 50); do
  curl -sS "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/sp"
  grep -q 'iscsi:127.0.0.1::' "$T/sp" && break
  sleep 0.2
done
grep -q '^sanboot iscsi:127.0.0.1::3260:1:' "$T/sp" || { cat "$T/sp"; fail "--no-portal: the address is not back"; }
pass "a server's floating portal goes into the script; --no-portal gives the address back"

# Without a token: the script changes nothing (issue 14: a fetch of the
# script used to reset the device's cache under its live session).
g1=$(gen_of pc01)
curl -sS -D "$T/h2" "$URL/boot.ipxe?mac=52-54-00-12-34-56" -o "$T/s2"
g2=$(gen_of pc01)
[ "$g2" -eq "$g1" ] || fail "a fetch without a token changed the boot generation $g1 -> $g2"
grep -qi '^X-Diskfarm-Boot-Token: missing' "$T/h2" || fail "no token header 'missing'"
grep -q '^sanboot ' "$T/s2" || fail "tokenless script does not sanboot"
pass "fetch without a token: generation kept ($g1)"
# With the token of a real ProxyDHCP answer: a new generation, once.
TU=$(token_url 52:54:00:12:34:56)
case "$TU" in *"&token="*) ;; *) fail "ProxyDHCP URL without a token: $TU" ;; esac
curl -sS -D "$T/h2t" "$TU" -o "$T/s2t"
g3=$(gen_of pc01)
[ "$g3" -eq $((g1 + 1)) ] || fail "token fetch: boot generation $g1 -> $g3"
grep -qi '^X-Diskfarm-Boot-Token: valid' "$T/h2t" || fail "no token header 'valid'"
curl -sS -D "$T/h2r" "$TU" -o "$T/s2r"
[ "$(gen_of pc01)" -eq "$g3" ] || fail "a reused token started another generation"
grep -qi '^X-Diskfarm-Boot-Token: already used' "$T/h2r" || fail "reused token not refused"
OTHER=$(token_url 52:54:00:12:34:99 | sed 's|mac=52:54:00:12:34:99|mac=52:54:00:12:34:56|')
curl -sS -D "$T/h2o" "$OTHER" -o /dev/null
[ "$(gen_of pc01)" -eq "$g3" ] || fail "another MAC's token started a generation"
grep -qi '^X-Diskfarm-Boot-Token: does not match' "$T/h2o" || fail "another MAC's token not refused"
pass "token from a ProxyDHCP answer: new generation once ($g1 -> $g3); reused or other MAC's token refused"

# Two healthy servers: ss3 is a second streamsvc; a live NBD session on ss1
# makes ss1 the more loaded one.
SOCK1=$SOCK
"$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/nbd2.sock" --admin-listen 127.0.0.1:0 >"$T/ss3.log" 2>&1 &
SS3_PID=$!
_df_pids="$_df_pids $SS3_PID"
for _ in $(seq 50); do grep -q "admin listening" "$T/ss3.log" && break; sleep 0.1; done
ADMIN3=$(grep -o 'admin[^ ]* listening on http://[0-9.:]*' "$T/ss3.log" | sed 's|.*http://||')
df server add ss3 --address 127.0.0.1 --admin-port "${ADMIN3##*:}" --iscsi-port 3263 >/dev/null
if command -v nbdsh >/dev/null; then
  nbdsh -u "nbd+unix:///device/pc01?socket=$SOCK1" -c 'import time; time.sleep(6)' &
  NBDSH=$!
fi
wait_log "stream server ss3 is now healthy" || fail "ss3 never healthy"
sleep 0.8
curl -sS "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/s3"
grep '^sanboot' "$T/s3"
n=$(grep -o 'iscsi:' "$T/s3" | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 iSCSI URIs, got $n"
if [ -n "${NBDSH:-}" ]; then
  grep -q '^sanboot iscsi:127.0.0.1::3263:1:.* iscsi:127.0.0.1::3260:1:' "$T/s3" ||
    fail "least loaded (ss3, 0 sessions) should come first"
  pass "two healthy servers listed, least loaded first, down server left out"
  wait "$NBDSH" 2>/dev/null || true
else
  pass "two healthy servers listed, down server left out (nbdsh missing: load order not checked)"
fi

# Another farm's stream server registered by mistake: its health answer
# names farm B, so it is never listed (nor its sessions counted).
FB=$T/farmB
FB_DB=$(farm_db farmb)
"$DISKFARM" --farm "$FB" ${FB_DB:+--db "$FB_DB"} init >/dev/null
"$STREAMSVC" --farm "$FB" ${FB_DB:+--db "$FB_DB"} --nbd-listen "unix:$T/nbdB.sock" --admin-listen 127.0.0.1:0 >"$T/ssB.log" 2>&1 &
SSB_PID=$!
_df_pids="$_df_pids $SSB_PID"
for _ in $(seq 50); do grep -q "admin listening" "$T/ssB.log" && break; sleep 0.1; done
ADMINB=$(grep -o 'admin[^ ]* listening on http://[0-9.:]*' "$T/ssB.log" | sed 's|.*http://||')
df server add ssB --address 127.0.0.1 --admin-port "${ADMINB##*:}" --iscsi-port 3264 >/dev/null
sleep 1.2   # a few health rounds (--health-interval 300 ms)
curl -sS "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/sB"
grep -q ':3264:' "$T/sB" && { cat "$T/sB"; fail "another farm's server is listed"; }
grep -q ':3263:' "$T/sB" || { cat "$T/sB"; fail "ss3 should still be listed"; }
df --json server show ssB >"$T/j.json" 2>/dev/null
jcheck "$T/j.json" 'd["health"] == "unhealthy"' '"not this farm" in d["health_detail"]'
df server remove ssB >/dev/null
kill "$SSB_PID"; wait "$SSB_PID" 2>/dev/null || true
pass "another farm's stream server is not listed"

# CHAP: credentials in the device row (migration 3 columns) reach the script.
if [ -n "$DF_DB_CONF" ] || python3 -c "import sqlite3" 2>/dev/null; then
  if [ -n "$DF_DB_CONF" ]; then
    db_sql "UPDATE devices SET chap_user='pc01-in', chap_secret='Secret-1234567' WHERE name='pc01'"
  else
  python3 - "$FARM/farm.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cols = [r[1] for r in db.execute("PRAGMA table_info(devices)")]
if "chap_user" in cols and "chap_secret" in cols:
    db.execute("UPDATE devices SET chap_user='pc01-in', chap_secret='Secret-1234567' WHERE name='pc01'")
    db.commit()
PY
  fi
  g0=$(gen_of pc01)
  curl -sS "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/s7n"
  grep -q 'Secret-1234567' "$T/s7n" && fail "the CHAP secret was served without a token"
  grep -q 'set username' "$T/s7n" && fail "CHAP user served without a token"
  grep -q '^echo diskfarm: fetched without a valid boot token: CHAP credentials left out' "$T/s7n" ||
    fail "tokenless script does not say the login will fail"
  [ "$(gen_of pc01)" -eq "$g0" ] || fail "tokenless fetch with CHAP changed the generation"
  wait_log "pc01 from 127.0.0.1: no token: script without CHAP credentials" ||
    fail "no log line for a tokenless fetch of a CHAP device"
  TU=$(token_url 52:54:00:12:34:56)
  curl -sS "$TU" -o "$T/s7"
  grep -q '^set username pc01-in$' "$T/s7" || fail "CHAP user missing with a valid token"
  grep -q '^set password Secret-1234567$' "$T/s7" || fail "CHAP password missing with a valid token"
  curl -sS "$TU" -o "$T/s7r"
  grep -q 'Secret-1234567' "$T/s7r" && fail "the CHAP secret was served twice for one token"
  grep -q 'Secret-1234567' "$BS_LOG" && fail "the CHAP secret reached the log"
  pass "CHAP secret only with a valid token, once; never without one, never logged"
fi

# Unknown MAC: the not-registered script, then auto-add.
curl -sS -D "$T/h4" "$URL/boot.ipxe?mac=52:54:00:aa:bb:cc" -o "$T/s4"
grep -q "not registered" "$T/s4" || fail "no not-registered message"
grep -q '^reboot' "$T/s4" || fail "not-registered script does not reboot"
df device show 52:54:00:aa:bb:cc >/dev/null 2>&1 && fail "unknown device was added with auto-add off"
pass "unknown MAC: 'not registered' script"
df farm set auto-add on --collection lab --template 'auto-{n}' >/dev/null
curl -sS -D "$T/h5n" "$URL/boot.ipxe?mac=52:54:00:aa:bb:cc" -o "$T/s5n"
grep -q 'auto-add needs the one-time token' "$T/s5n" || { cat "$T/s5n"; fail "tokenless auto-add not refused"; }
df device show 52:54:00:aa:bb:cc >/dev/null 2>&1 && fail "a tokenless fetch auto-added a device"
curl -sS "$(token_url 52:54:00:aa:bb:cc)" -o "$T/s5"
grep -q 'iqn.2026-11.org.diskfarm:auto-1$' "$T/s5" || { cat "$T/s5"; fail "auto-add script"; }
df device show auto-1 | grep -q "52:54:00:aa:bb:cc" || fail "auto-added device missing"
pass "auto-add: refused without a token; with one, unknown MAC added as auto-1 in collection lab"
# Rate limit: 10 auto-adds a minute from one address (auto-1 was the first).
for i in $(seq 2 12); do
  m=$(printf '52:54:00:ab:00:%02x' "$i")
  curl -sS -D "$T/h5.$i" "$(token_url "$m")" -o "$T/s5.$i"
done
added=$(df device list | grep -c '^auto-' || true)
[ "$added" -eq 10 ] || fail "auto-add rate limit: $added devices added (want 10)"
grep -q 'auto-add limit of this address reached (10 per minute)' "$T/s5.12" ||
  { cat "$T/s5.12"; fail "no on-screen message for the auto-add limit"; }
grep -qi '^X-Diskfarm-Status: not-added' "$T/h5.12" || fail "no not-added status"
wait_log "not auto-added: auto-add limit of this address" || fail "no log line for the auto-add limit"
df farm set auto-add off >/dev/null
pass "auto-add rate limit: 10 a minute from one address, then a clear script message and a log line"

# Bad requests.
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/boot.ipxe")
[ "$code" = 400 ] || fail "no mac: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/boot.ipxe?mac=zz:zz")
[ "$code" = 400 ] || fail "bad mac: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/boot.ipxe?mac=52:54:00:12:34:56")
[ "$code" = 405 ] || fail "POST: HTTP $code"
pass "missing/invalid MAC -> 400, POST -> 405"

# Query values never reach the log raw (a newline would forge a log line),
# and a repeated mac= or uuid= is ambiguous: refused.
curl -sS -o /dev/null "$URL/boot.ipxe?mac=52:54:00:12:34:56&uuid=1%0Anotice:%20FORGED"
sleep 0.2
grep -q '^notice: FORGED' "$BS_LOG" && fail "uuid query parameter forged a log line"
grep -q 'uuid (invalid)' "$BS_LOG" || fail "invalid uuid not marked in the log"
code=$(curl -s -o "$T/dup" -w '%{http_code}' "$URL/boot.ipxe?mac=52:54:00:aa:bb:cc&mac=52:54:00:12:34:56")
[ "$code" = 400 ] || fail "repeated mac=: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/boot.ipxe?mac=52:54:00:12:34:56&uuid=1&uuid=2")
[ "$code" = 400 ] || fail "repeated uuid=: HTTP $code"
pass "uuid sanitised in the log; repeated mac=/uuid= -> 400"

# Static files, Range, confinement.
curl -sS "$URL/undionly.kpxe" -o "$T/u"
cmp "$FARM/boot/undionly.kpxe" "$T/u" || fail "static file differs"
curl -sS -r 1000-1999 "$URL/undionly.kpxe" -o "$T/r"
dd if="$FARM/boot/undionly.kpxe" bs=1000 skip=1 count=1 status=none | cmp - "$T/r" || fail "Range"
ln -s /etc/passwd "$FARM/boot/escape"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/escape")
[ "$code" = 403 ] || fail "symlink out of the root: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --path-as-is "$URL/../farm.db")
[ "$code" = 404 ] || [ "$code" = 403 ] || fail "../farm.db: HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/nope")
[ "$code" = 404 ] || fail "missing file: HTTP $code"
pass "static files byte-identical, Range, symlink/.. refused, 404"

# A file truncated in place during a download (issue 14: it was mmap'ed,
# so the daemon could die of SIGBUS, and the download broke off): the
# download gets the file as it was when requested, the daemon lives on.
head -c $((32 * 1024 * 1024)) /dev/urandom >"$FARM/boot/shrink.bin"
cp "$FARM/boot/shrink.bin" "$T/shrink.orig"
curl -sS --limit-rate 4M "$URL/shrink.bin" -o "$T/shrink" 2>/dev/null &
SHRINK=$!
sleep 1
truncate -s 4096 "$FARM/boot/shrink.bin"
wait "$SHRINK" || true
kill -0 "$BS_PID" 2>/dev/null || { tail -5 "$BS_LOG"; fail "bootstrapsvc died when a file shrank during a download"; }
cmp "$T/shrink.orig" "$T/shrink" || fail "download of a file truncated meanwhile broke off"
curl -sS "$URL/undionly.kpxe" -o "$T/u3"
cmp "$FARM/boot/undionly.kpxe" "$T/u3" || fail "static file after a shrunk download"
pass "a file truncated during its download: whole download, the daemon keeps serving"

# Idle keep-alive and half-closed connections are closed (issue 14: they
# stayed open 200 s), while a connection in use is not.
python3 - "$HTTP_PORT" <<'PY' || fail "idle or half-closed HTTP connections not closed"
import socket, sys, time
port = int(sys.argv[1])
req = b"GET /undionly.kpxe HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
def read_all(s, limit):
    s.settimeout(limit)
    t0, n = time.time(), 0
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return time.time() - t0, n
            n += len(d)
    except socket.timeout:
        return None, n
idle = socket.create_connection(("127.0.0.1", port))
half = socket.create_connection(("127.0.0.1", port))
idle.sendall(req)
half.sendall(req)
half.shutdown(socket.SHUT_WR)
t0 = time.time()
ok = True
for name, s in (("idle keep-alive", idle), ("half-closed", half)):
    left = 30 - (time.time() - t0)
    took, n = read_all(s, max(left, 1))
    total = time.time() - t0
    print("%s: %d bytes, closed after %s s" % (name, n, "%.1f" % total if took is not None else "> 30"))
    ok = ok and took is not None and n > 70000 and total < 20
sys.exit(0 if ok else 1)
PY
pass "idle keep-alive and half-closed connections closed within 20 s"

# Started as root with --user nobody: a boot directory nobody cannot search
# is fatal at start (not a 403 on every file later); once the farm belongs
# to a group, the dropped process joins it and serves files and scripts.
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 && getent group daemon >/dev/null; then
  MAIN_LOG=$BS_LOG
  # init as root gave the farm to diskfarm, whose group nobody would join:
  # make the farm root's alone for this case.
  chown root:root "$FARM" "$FARM/boot"
  "$BOOTSTRAPSVC" --farm "$FARM" --address 127.0.0.1 --http-port 0 --tftp-port 0 \
    --dhcp-port 0 --pxe-port 0 --user nobody >"$T/drop.log" 2>&1 &
  DROP_PID=$!
  _df_pids="$_df_pids $DROP_PID"
  for _ in $(seq 50); do kill -0 "$DROP_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DROP_PID" 2>/dev/null; then
    cat "$T/drop.log"; fail "--user nobody with a root-only boot directory: still running"
  fi
  grep -q "cannot search" "$T/drop.log" || { cat "$T/drop.log"; fail "no precise error"; }
  chgrp daemon "$FARM" "$FARM/boot"
  # HOME stays root's after the drop, as under systemd or sudo: nothing in
  # the daemon may need it (GIO's proxy resolver opened dconf there).
  mkdir -m 700 "$T/roothome"
  HOME=$T/roothome XDG_CACHE_HOME='' start_bootstrapsvc --user nobody
  grep -q "running as nobody" "$BS_LOG" || fail "did not drop to nobody"
  wait_log "stream server ss1 is now healthy" || fail "ss1 never healthy after the drop"
  if grep -E "dconf|critical|warning" "$BS_LOG"; then
    fail "log noise after the privilege drop"
  fi
  curl -sS "http://127.0.0.1:$HTTP_PORT/undionly.kpxe" -o "$T/u2"
  cmp "$FARM/boot/undionly.kpxe" "$T/u2" || fail "static file after the drop"
  curl -sS "http://127.0.0.1:$HTTP_PORT/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/s8"
  grep -q '^sanboot ' "$T/s8" || { cat "$T/s8"; fail "boot script after the drop"; }
  kill -TERM "$BS_PID"
  BS_LOG=$MAIN_LOG
  pass "privilege drop: unreadable boot dir fatal at start; farm group joined"
else
  echo "SKIP: privilege drop (needs root, user nobody, group daemon)"
fi

# A stream server that answers its first health checks, then trickles its
# answer a byte at a time (or sends an endless body): each probe has a
# total deadline, so it turns unhealthy and scripts stay fast.
python3 - "$T/trickle.port" <<'PY' >"$T/trickle.log" 2>&1 &
import http.server, sys, time
served = [0]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        served[0] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if served[0] <= 3:
            body = b'{"status":"ok","sessions":0}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Content-Length", "100000000")
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
TRICKLE_PID=$!
_df_pids="$_df_pids $TRICKLE_PID"
for _ in $(seq 50); do [ -s "$T/trickle.port" ] && break; sleep 0.1; done
df server add sst --address 127.0.0.1 --admin-port "$(cat "$T/trickle.port")" --iscsi-port 3269 >/dev/null
wait_log "stream server sst is now healthy" 60 || fail "sst never healthy"
wait_log "stream server sst is now unhealthy" 80 || fail "a trickling health answer keeps sst healthy"
t0=$(date +%s%N)
curl -sS --max-time 5 "$URL/boot.ipxe?mac=52:54:00:12:34:56" -o "$T/s9"
t1=$(date +%s%N)
grep -q '3269' "$T/s9" && fail "trickling server listed"
[ $(( (t1 - t0) / 1000000 )) -lt 2000 ] || fail "script took $(( (t1 - t0) / 1000000 )) ms"
df server remove sst >/dev/null
kill "$TRICKLE_PID" 2>/dev/null || true
pass "health probes have a total deadline: a trickling server turns unhealthy"

# No healthy stream server: 503.
stop_streamsvc
kill -TERM "$SS3_PID" 2>/dev/null || true
wait_log "stream server ss3 is now unhealthy" 60 || true
wait_log "stream server ss1 is now unhealthy" 60 || fail "ss1 never seen unhealthy"
code=$(curl -s -o "$T/s6" -w '%{http_code}' "$URL/boot.ipxe?mac=52:54:00:12:34:56")
[ "$code" = 503 ] || fail "no healthy server: HTTP $code"
pass "no healthy stream server -> 503 with an on-screen message"
