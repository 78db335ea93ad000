#!/bin/bash
# farm-watch: servers learn of farm changes by notification (issue 12).
# On PostgreSQL every committed change posts a NOTIFY (its audit row) and
# streamsvc's change watch (LISTEN, its own connection) wakes the binding
# checker at once, so a live session of a device that was reset is fenced
# within milliseconds, not at the next poll (0.5 s; 10 s while the watch
# is live).  On SQLite the checker keeps polling every 0.5 s.
# Offline mode (PostgreSQL only): with the DB stopped, live sessions keep
# reading, writing and flushing (nothing is fenced), `diskfarm device add`
# fails naming the DB; when the DB is back the watch, the pooled
# connections and the heartbeat reconnect and a change fences at once
# again.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
. "$(dirname "$0")/bootstrap-lib.sh"
need python3 curl nbdinfo
python3 -c 'import nbd' 2>/dev/null || skip "python3 nbd module not installed"

TRIALS=5
init_vdisk g 16
for i in $(seq $TRIALS); do
  df device add "d$i" --mac "52:54:00:00:01:0$i" --vdisk g >/dev/null
done
df device add o1 --mac 52:54:00:00:01:21 --vdisk g >/dev/null
df device add o3 --mac 52:54:00:00:01:23 --vdisk g >/dev/null
start_streamsvc --server-name s1 --heartbeat-interval 200 \
  --iscsi-listen 127.0.0.1:0 --server-address 127.0.0.1

# latency.py DEVICE...: for each device an idle session; `device reset`;
# milliseconds from the command's exit to the session's close.
cat >"$T/latency.py" <<'PY'
import os, subprocess, sys, time
import nbd

SOCK, DISKFARM, FARM = (os.environ[k] for k in ("SOCK", "DISKFARM", "FARM"))
worst = 0.0
figures = []
for dev in sys.argv[1:]:
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///device/%s?socket=%s" % (dev, SOCK))
    h.pread(4096, 0)
    subprocess.run([DISKFARM, "--farm", FARM, "device", "reset", dev],
                   check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:
        if h.aio_is_closed() or h.aio_is_dead():
            break
        try:
            h.poll(20)
        except nbd.Error:
            pass
    else:
        sys.exit("%s: session still open 3 s after device reset" % dev)
    ms = (time.monotonic() - t0) * 1000
    figures.append(ms)
    worst = max(worst, ms)
print(" ".join("%.0f" % f for f in figures),
      "%.0f" % sorted(figures)[len(figures) // 2], "%.0f" % worst)
PY
devs=$(for i in $(seq $TRIALS); do echo "d$i"; done)
# shellcheck disable=SC2086
out=$(SOCK=$SOCK DISKFARM=$DISKFARM FARM=$FARM python3 "$T/latency.py" $devs) ||
  fail "latency: $out"
worst=${out##* }
out=${out% *}
median=${out##* }
figures=${out% *}
if [ -n "$DF_DB_CONF" ]; then
  grep -q "farm watch: listening for changes on" "$T/streamsvc.log" ||
    fail "streamsvc's change watch is not listening"
  # polling every 500 ms would give a median near 250 ms
  [ "$median" -lt 100 ] && [ "$worst" -lt 400 ] ||
    fail "a reset reached a live session in $median ms (median; ms: $figures): not notified"
  echo "figure: change -> fenced session on PostgreSQL (NOTIFY): $figures ms (median $median, worst $worst; poll interval 10000 ms while notified, 500 ms otherwise)"
  pass "device reset fences live sessions by notification (median $median ms, worst $worst ms)"
else
  [ "$worst" -lt 1500 ] || fail "SQLite polling: up to $worst ms (ms: $figures)"
  echo "figure: change -> fenced session on SQLite (poll every 500 ms): $figures ms (median $median, worst $worst)"
  pass "SQLite keeps polling: a reset reached live sessions within $worst ms"
  exit 0
fi

# ---- offline mode (PostgreSQL) ----------------------------------------
# Offline mode's local snapshot: an SQLite copy of the farm, rewritten at
# each change.
snap=$FARM/run/farm-snapshot.db
[ -f "$snap" ] || fail "no local snapshot $snap"
n=$(sqlite3 "$snap" "SELECT count(*) FROM devices WHERE name = 'o3'")
[ "$n" = 1 ] || fail "the snapshot does not hold device o3"
gen_db=$(psql -X -At "$DISKFARM_DB" -c "SELECT generation FROM devices WHERE name = 'd1'")
for _ in $(seq 30); do
  gen_snap=$(sqlite3 "$snap" "SELECT generation FROM devices WHERE name = 'd1'")
  [ "$gen_snap" = "$gen_db" ] && break; sleep 0.1
done
[ "$gen_snap" = "$gen_db" ] || fail "snapshot: d1 generation $gen_snap, DB $gen_db"
pass "local snapshot $snap follows the farm (d1 generation $gen_db)"

start_bootstrapsvc --server-name boot1 -v
URL=http://127.0.0.1:$HTTP_PORT
wait_log "s1 is now healthy" 80 || { cat "$BS_LOG"; fail "bootstrap probes"; }
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:23" -o "$T/script.on" || fail "boot.ipxe online"
grep -q "sanboot.*iscsi:127.0.0.1::" "$T/script.on" || { cat "$T/script.on"; fail "no sanboot online"; }
# A trusted boot (a one-time token, as ProxyDHCP hands out) gets a new
# boot generation; the farm's token key, read while the DB answers.
TOKEN_KEY=$(psql -X -At "$DISKFARM_DB" -c "SELECT value FROM settings WHERE key = 'bootstrap.token-key'")
[ -n "$TOKEN_KEY" ] || fail "no boot token key in the farm DB"
boot_token() { # MAC: a fresh token for it
  python3 - "$TOKEN_KEY" "$1" <<'PY'
import base64, hashlib, hmac, os, sys, time
key, mac = bytes.fromhex(sys.argv[1]), sys.argv[2]
t, xid = int(time.time()), os.urandom(4).hex()
h = hmac.new(key, ("diskfarm-boot-v1|%s|%s|%d" % (mac, xid, t)).encode(),
             hashlib.sha256).digest()
print("%d.%s.%s" % (t, xid, base64.urlsafe_b64encode(h).decode().rstrip("=")))
PY
}
# The endpoint a bootstrap server posts offline generations to: with the
# DB up it refuses (503: generations are recorded there); bad bodies 400;
# GET 405; no token 401.
post_gen() { admin_curl -s -o "$T/post.out" -w '%{http_code}' -X POST --data-binary "$1" "http://$ADMIN/v1/offline-generations"; }
[ "$(post_gen '{"device":"o3","generation":9}')" = 503 ] || fail "POST offline generation with the DB up: $(cat "$T/post.out")"
grep -q "the farm DB answers" "$T/post.out" || fail "503 without the reason: $(cat "$T/post.out")"
for bad in '' 'not json' '[1]' '{"device":"o3"}' '{"generation":3}' '{"device":3,"generation":3}' '{"device":"o3","generation":-2}'; do
  [ "$(post_gen "$bad")" = 400 ] || fail "POST offline generation body '$bad': $(cat "$T/post.out")"
done
[ "$(admin_curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/v1/offline-generations")" = 405 ] || fail "GET offline-generations is not 405"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary '{"device":"o3","generation":9}' "http://$ADMIN/v1/offline-generations")" = 401 ] ||
  fail "POST offline-generations without a token is not 401"
[ ! -e "$FARM/run/offline-generations" ] || fail "a refused POST wrote the journal"
pass "POST /v1/offline-generations: 503 with the DB up, 400 for 7 bad bodies, 405 for GET, 401 without a token; nothing journaled"
# nbdwait.closed_within (h, seconds): the session h closed (fenced) within
# seconds; for hold.py and offline.py.
cat >"$T/nbdwait.py" <<'PY'
import time
import nbd

def closed_within(h, seconds):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and not (h.aio_is_closed() or h.aio_is_dead()):
        try:
            h.poll(20)
        except nbd.Error:
            pass
    return h.aio_is_closed() or h.aio_is_dead()
PY
# hold.py DEVICE: a session of DEVICE; "open", then at each line from
# stdin "fenced" or "alive" (3 s to be closed).
cat >"$T/hold.py" <<'PY'
import os, sys
import nbd
from nbdwait import closed_within
h = nbd.NBD()
h.connect_uri("nbd+unix:///device/%s?socket=%s" % (sys.argv[1], os.environ["SOCK"]))
h.pread(4096, 0)
print("open", flush=True)
for _ in sys.stdin:
    print("fenced" if closed_within(h, 3.0) else "alive", flush=True)
PY
cat >"$T/offline.py" <<'PY'
import os, subprocess, sys, time
import nbd
from nbdwait import closed_within

SOCK = os.environ["SOCK"]
M = 1 << 20
h = nbd.NBD()
h.connect_uri("nbd+unix:///device/o1?socket=%s" % SOCK)
h.pwrite(b"\x11" * 65536, 1 * M)
h.flush()
print("connected", flush=True)
sys.stdin.readline()             # the DB is down now
for i in range(20):               # 2 s of I/O, flushes included
    h.pwrite(bytes([0x20 + i]) * 65536, 2 * M)
    h.flush()
    assert h.pread(65536, 1 * M) == b"\x11" * 65536
    time.sleep(0.1)
print("served", flush=True)
sys.stdin.readline()             # the DB is back and o1 was reset
t0 = time.monotonic()
if not closed_within(h, 3.0):
    sys.exit("o1: not fenced 3 s after its reset with the DB back")
print("fenced %.0f" % ((time.monotonic() - t0) * 1000), flush=True)
PY
coproc OFF { SOCK=$SOCK python3 -u "$T/offline.py" 2>&1; }
read -r -t 10 line <&"${OFF[0]}" || fail "offline.py did not connect"
[ "$line" = connected ] || fail "offline.py: $line"
pg_stop "$_df_pg"
sleep 1.5 # past the heartbeat's and the checker's next rounds
echo >&"${OFF[1]}"
read -r -t 15 line <&"${OFF[0]}" || fail "offline.py: no answer with the DB down"
[ "$line" = served ] || fail "with the DB down the live session failed: $line"
kill -0 "$STREAMSVC_PID" || fail "streamsvc died with the DB down"
grep -q "sessions fenced" "$T/streamsvc.log" &&
  ! grep -q "device o1 .*sessions fenced" "$T/streamsvc.log" || true
if grep -q "device o1.*fenced" "$T/streamsvc.log"; then
  fail "the DB outage fenced o1's session"
fi
pass "DB down: a live session keeps reading, writing and flushing; nothing fenced"

curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:23" -o "$T/script.off" || fail "boot.ipxe offline"
grep -q "sanboot.*iscsi:127.0.0.1::" "$T/script.off" || { cat "$T/script.off"; cat "$BS_LOG"; fail "a known device gets no boot script offline"; }
grep -q "boot scripts from the local snapshot" "$BS_LOG" || fail "bootstrapsvc did not say it is offline"
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:99" -o "$T/script.unknown" || fail "boot.ipxe unknown offline"
grep -q "not registered" "$T/script.unknown" || { cat "$T/script.unknown"; fail "an unknown device offline"; }
nbdinfo --size "$(uri device/o3)" >/dev/null || fail "a new session of known device o3 with the DB down"
grep -q "export device/o3: opened from the local snapshot" "$T/streamsvc.log" ||
  fail "streamsvc did not open o3 from the snapshot"
pass "DB down: a known device gets its boot script and a new session from the local snapshot; an unknown one is not registered"

# A reboot while the DB is down still gives a clean machine: bootstrapsvc
# gives the next boot generation, journals it and tells the stream
# servers its script names; the new session is of that generation (the
# previous boot's session is fenced) and the DB records it once back.
JOURNAL=$FARM/run/offline-generations
g0=$(sqlite3 "$snap" "SELECT generation FROM devices WHERE name = 'o3'")
coproc HOLD { SOCK=$SOCK python3 -u "$T/hold.py" o3 2>&1; }
read -r -t 10 line <&"${HOLD[0]}" && [ "$line" = open ] || fail "hold.py: ${line:-no answer}"
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:23&token=$(boot_token 52:54:00:00:01:23)" \
  -o "$T/script.gen" || fail "trusted boot.ipxe offline"
g1=$((g0 + 1))
grep -q "boot generation $g1," "$T/script.gen" || { cat "$T/script.gen"; cat "$BS_LOG"; fail "offline trusted boot: not generation $g1"; }
grep -q "o3: offline: new boot generation $g1 journaled .*taken by s1" "$BS_LOG" ||
  { cat "$BS_LOG"; fail "bootstrapsvc did not journal and tell generation $g1"; }
grep -q "device o3: boot generation $g1 given offline" "$T/streamsvc.log" ||
  fail "streamsvc did not take generation $g1"
grep -qx "o3 $g1" "$JOURNAL" || fail "journal $JOURNAL: $(cat "$JOURNAL" 2>&1)"
nbdinfo --size "$(uri device/o3)" >/dev/null || fail "a session of o3's offline generation"
echo >&"${HOLD[1]}"
read -r -t 10 line <&"${HOLD[0]}" || fail "hold.py: no answer"
[ "$line" = fenced ] || fail "the previous boot's session of o3 is $line after the offline reboot"
grep -q "sessions fenced: device o3 started boot generation $g1 (sessions are of $g0)" "$T/streamsvc.log" ||
  fail "no fence of o3's generation $g0 by $g1"
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:23&token=$(boot_token 52:54:00:00:01:23)" \
  -o "$T/script.gen2" || fail "second trusted boot.ipxe offline"
g2=$((g0 + 2))
grep -q "boot generation $g2," "$T/script.gen2" || { cat "$T/script.gen2"; fail "second offline boot: not generation $g2"; }
exec {HOLD[1]}>&-
[ "$(post_gen '{"device":"o3","generation":99999999999}')" = 409 ] || fail "POST an absurd generation offline: $(cat "$T/post.out")"
[ "$(post_gen '{"device":"nosuch","generation":3}')" = 404 ] || fail "POST an unknown device offline: $(cat "$T/post.out")"
grep -qx "o3 $g2" "$FARM/run/offline-generations" || fail "a refused POST changed the journal"
pass "DB down: a reboot gets generations $g1 then $g2 (journaled, told to s1); the new session fences generation $g0's; an absurd generation is 409, an unknown device 404"

# A server started during the outage starts from the snapshot and serves
# known devices; it registers once the DB is back.
SOCK2=$T/s2.sock
"$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$SOCK2" --iscsi-listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 --server-name s2 --server-address 127.0.0.1 \
  --heartbeat-interval 200 >"$T/s2.log" 2>&1 &
S2_PID=$!
_df_pids="$_df_pids $S2_PID"
for _ in $(seq 100); do
  [ -S "$SOCK2" ] && grep -q "admin listening on http" "$T/s2.log" && break
  kill -0 "$S2_PID" 2>/dev/null || { cat "$T/s2.log"; fail "streamsvc s2 could not start with the DB down"; }
  sleep 0.1
done
[ -S "$SOCK2" ] || { cat "$T/s2.log"; fail "s2 did not start with the DB down"; }
grep -q "starting from the local snapshot" "$T/s2.log" || { cat "$T/s2.log"; fail "s2 did not say it starts offline"; }
nbdinfo --size "nbd+unix:///device/d1?socket=$SOCK2" >/dev/null || { cat "$T/s2.log"; fail "s2 (started offline) does not serve d1"; }
pass "DB down: a streamsvc started now starts from the local snapshot and serves a known device"

set +e
msg=$(df device add o2 --mac 52:54:00:00:01:22 --vdisk g 2>&1); rc=$?
set -e
[ "$rc" -ne 0 ] || fail "device add succeeded with the DB down"
[ "$(printf '%s\n' "$msg" | wc -l)" -eq 1 ] || fail "not one line: $msg"
case $msg in
  *"farm DB host="*"dbname=farm"*"cannot connect"*) ;;
  *) fail "device add with the DB down: '$msg' does not name the DB" ;;
esac
pass "DB down: device add fails: $msg"
grep -q "farm watch: farm DB .*connection lost\|farm watch: .*terminat" "$T/streamsvc.log" ||
  fail "the change watch did not notice the outage"

pg_restart "$_df_pg" || fail "PostgreSQL did not start again"
t0=$(date +%s%N)
for _ in $(seq 50); do
  [ "$(grep -c "farm watch: listening for changes" "$T/streamsvc.log")" -ge 2 ] && break
  sleep 0.1
done
[ "$(grep -c "farm watch: listening for changes" "$T/streamsvc.log")" -ge 2 ] ||
  fail "the change watch did not listen again within 5 s"
back_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
df device reset o1 >/dev/null || fail "device reset o1 with the DB back"
echo >&"${OFF[1]}"
read -r -t 10 line <&"${OFF[0]}" || fail "offline.py: no answer after the DB came back"
case $line in fenced\ *) ;; *) fail "after the DB came back: $line" ;; esac
wait "$OFF_PID" 2>/dev/null || true
echo "figure: watch listening again ${back_ms} ms after PostgreSQL restarted; reset -> fenced ${line#fenced } ms"
[ "${line#fenced }" -lt 150 ] || fail "after the outage a reset took ${line#fenced } ms to fence"
pass "DB back: the watch listens again and a reset fences at once"

for _ in $(seq 50); do
  json server list --no-health
  grep -q '"s2"' "$T/j.json" && break; sleep 0.1
done
json server list
jcheck "$T/j.json" '[s for s in d if s["name"] == "s1"][0]["state"] == "healthy"' \
  '[s for s in d if s["name"] == "s2"][0]["state"] == "healthy"'
df device add o2 --mac 52:54:00:00:01:22 --vdisk g >/dev/null || fail "device add with the DB back"
pass "DB back: the heartbeat is healthy again (and s2, started offline, registered) and console writes work"
for _ in $(seq 50); do
  gen=$(psql -X -At "$DISKFARM_DB" -c "SELECT generation FROM devices WHERE name = 'o3'")
  [ "$gen" = "$g2" ] && [ ! -e "$JOURNAL" ] && break
  sleep 0.1
done
[ "$gen" = "$g2" ] || fail "DB back: o3 is at generation $gen, not the offline $g2"
[ ! -e "$JOURNAL" ] || fail "DB back: the journal stays: $(cat "$JOURNAL")"
n=$(psql -X -At "$DISKFARM_DB" -c "SELECT count(*) FROM audit WHERE action = 'device.offline-boot' AND object = 'o3'")
[ "$n" -ge 1 ] || fail "no audit row device.offline-boot for o3"
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:01:23&token=$(boot_token 52:54:00:00:01:23)" \
  -o "$T/script.gen3" || fail "trusted boot.ipxe online"
grep -q "boot generation $((g2 + 1))," "$T/script.gen3" || { cat "$T/script.gen3"; fail "online boot after the outage: not generation $((g2 + 1))"; }
pass "DB back: o3's offline generation $g2 is recorded (audit device.offline-boot), the journal is gone, the next boot is $((g2 + 1))"
