#!/bin/bash
# Failover of device caches between stream servers (issue 13).  Two
# streamsvc, each with its own farm directory, share one farm DB (farm2's
# farm.db is a symlink to farm's on SQLite; one PostgreSQL DB in the -pg
# variant) and one shared cache directory (as NFS would be between hosts).
# Tier 2, server-persistent under a cache lease (--lease-time 3000: held
# until 2.25 s after a renewal, taken over 0.75 s after it ran out):
#   1. a cache released with its last session moves at once (new epoch);
#      (1b. the writer of numbered records laps the 16 MiB disk);
#   2. a device whose lease the other server holds waits (bounded) and is
#      refused naming the holder;
#   3. kill -9 of the holder mid-run: a writer of numbered records fails
#      over; every acknowledged record is there (the last of each block:
#      a fast writer laps the disk); the stall is printed;
#   4. SIGSTOP (the paused process): the survivor takes over, and the
#      resumed server refuses the request it had queued (EIO);
#   5. farm DB outage for the holder only (test hook): it stops writing
#      before the lease can move; the writer fails over;
#   6. slow disk (a FLUSH delayed 6 s) during that outage: the flush is
#      refused, not written after the takeover; over iSCSI (6b) the
#      command gets NOT READY / BECOMING READY, which initiators retry.
#   Every step writes a journal (epoch, server, start, end of each write
#   to the cache's files); lease-journal.py fails if two servers ever
#   wrote at once.
# Tier 3, a server cache: another server serves that boot generation a
# lost cache (EIO on NBD, MEDIUM ERROR on iSCSI), a log line and a metric;
# a new boot generation gets a fresh cache.  A private image (it outlives
# boots) is refused by the other server in every generation.
. "$TESTS_SRCDIR/lib.sh"
need nbdsh nbdinfo qemu-io curl python3 iscsi-inq
fail() {
  for f in "$T"/ss1.log "$T"/ss2.log; do
    [ -f "$f" ] && { echo "--- $f (tail)"; tail -15 "$f"; }
  done
  echo "FAIL: $*" >&2; exit 1
}
WRITER=$TESTS_SRCDIR/lease-writer.py
JCHECK=$TESTS_SRCDIR/lease-journal.py
TTL=3000

df init >/dev/null
"$DISKFARM" --farm "$T/farm2" init >/dev/null
if [ -z "$DF_DB_CONF" ]; then
  rm -f "$T"/farm2/farm.db*
  ln -s ../farm/farm.db "$T/farm2/farm.db"
fi
# one store too (a shared file system, DESIGN.md "Store")
rm -rf "$T/farm2/store"
ln -s ../farm/store "$T/farm2/store"
make_raw "$T/disk.raw" 16
df vdisk import golden "$T/disk.raw" >/dev/null
df device add p --mac 52:54:00:00:00:01 --vdisk golden --cache server-persistent >/dev/null
df device add s --mac 52:54:00:00:00:02 --vdisk golden --cache server >/dev/null
df device add v --mac 52:54:00:00:00:03 --vdisk golden --cache private >/dev/null
SHARED=$T/shared
JOURNAL=$T/journal
mkdir "$SHARED"
: >"$JOURNAL"
if id diskfarm >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  chown diskfarm: "$SHARED" "$JOURNAL"
fi

# start_ss NAME FARMDIR [VAR=VALUE...]: streamsvc NAME on FARMDIR/run/nbd.sock
# with the shared cache directory.  Sets PID_<NAME>, ADMIN_<NAME>.
start_ss() {
  local name=$1 farm=$2 log=$T/$1.log
  shift 2
  rm -f "$farm/run/nbd.sock"
  env DISKFARM_TEST_WRITE_JOURNAL="$JOURNAL" \
    DISKFARM_FAULT_LEASE_DB_DOWN="$T/$name.dbdown" "$@" \
    "$STREAMSVC" --farm "$farm" --nbd-listen "unix:$farm/run/nbd.sock" \
    --iscsi-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --server-name "$name" --server-address 127.0.0.1 \
    --shared-cache-dir "$SHARED" --lease-time $TTL ${LEASE_TEST_VERBOSE:+-v} >>"$log" 2>&1 &
  local pid=$!
  _df_pids="$_df_pids $pid"
  for _ in $(seq 100); do
    [ -S "$farm/run/nbd.sock" ] && grep -q "registry: registered" "$log" && break
    kill -0 $pid 2>/dev/null || { cat "$log"; fail "streamsvc $name exited"; }
    sleep 0.1
  done
  [ -S "$farm/run/nbd.sock" ] || { cat "$log"; fail "$name did not start"; }
  eval "PID_$name=$pid"
  eval "ADMIN_$name=$(grep -o 'admin listening on http://[0-9.:]*' "$log" | tail -1 | sed 's|.*:||')"
}
S1=$FARM/run/nbd.sock
S2=$T/farm2/run/nbd.sock
u() { echo "nbd+unix:///device/$1?socket=$2"; }
now() { date +%s.%N; }
# check_records ACKS SOCK: the last record ACKS lists for each block (the
# writer laps the disk) is intact on SOCK; prints how many ACKS lists
check_records() {
  nbdsh -u "$(u p "$2")" -c "
blocks = h.get_size() // 4096
last = {}
n = 0
for line in open('$1'):
    r = int(line.split()[0])
    last[r % blocks] = r
    n += 1
for b, r in last.items():
    got = h.pread(4096, b * 4096)
    assert got == r.to_bytes(8, 'little') * 512, 'record %d lost or torn' % r
print(n)
"
}
# stall ACKS T0: seconds from T0 to the first acknowledgement by ss2
# (socket 1) after it
stall() {
  awk -v t0="$2" '$2 > t0 && $3 == 1 { printf "%.2f", $2 - t0; exit }' "$1"
}
# on_ss1 ACKS N: the writer has N records acknowledged by ss1 (socket 0)
on_ss1() { [ "$(awk '$3 == 0' "$1" 2>/dev/null | wc -l)" -ge "$2" ]; }
journal_ok() { python3 "$JCHECK" "$JOURNAL" "$@" >"$T/journal.out" || fail "journal: two writers"; }
# max_gap ACKS: the longest time between two acknowledged records
max_gap() {
  awk 'NR > 1 && $2 - p > m { m = $2 - p } { p = $2 } END { printf "%.2f", m }' "$1"
}

start_ss ss1 "$FARM"
start_ss ss2 "$T/farm2"

# ---- 1. handover when the holder lets go --------------------------------
nbdsh -u "$(u p "$S1")" -c "h.pwrite(b'\x11' * 65536, 0); h.flush()"
nbdsh -u "$(u p "$S2")" -c "assert h.pread(65536, 0) == b'\x11' * 65536" ||
  fail "ss2 does not see what ss1 flushed to the shared cache"
nbdsh -u "$(u p "$S2")" -c "h.pwrite(b'\x22' * 4096, 65536); h.flush()"
[ -f "$SHARED/p/persistent.map" ] || fail "the cache is not in the shared directory"
[ ! -e "$FARM/cache/p/persistent.map" ] || fail "a cache in the farm directory"
# epochs: ss1's session 1, ss2's sessions 2 and 3 (each new hold bumps it)
grep -q "^3 " "$SHARED/p/lease.epoch" || fail "token file: $(cat "$SHARED/p/lease.epoch")"
journal_ok 3
json device show p
jcheck "$T/j.json" 'd["cache_lease"]["kind"] == "shared"' 'd["cache_lease"]["holder"] == "ss2"' \
  'd["cache_lease"]["epoch"] == 3' 'd["cache_lease"]["state"] == "released"'
df device show p | grep -q "^ *cache lease: *released by ss2, epoch 3$" ||
  fail "device show: $(df device show p | grep 'cache lease')"
pass "a released cache moves at once (epoch 3 in the token file, device show)"

# ---- 1b. the writer laps the disk -----------------------------------------
# More records than the 16 MiB disk has blocks: the writer wraps (a fast
# one did so in step 5; running off the end got ENOSPC from libnbd, which
# it took for a server failure and "failed over" on for ever).
timeout 60 python3 "$WRITER" "$T/acks1" 4160 "$S1" 2>"$T/w1.err" ||
  { tail -5 "$T/w1.err"; fail "the writer did not write 4160 records to a 4096-block disk"; }
n=$(check_records "$T/acks1" "$S1") || fail "a record lost after the writer lapped the disk"
[ "$n" = 4160 ] || fail "$n records acknowledged, expected 4160"
journal_ok
pass "the writer lapped the disk: $n records, the last of each block intact"

# ---- 2. held elsewhere: bounded wait, then a refusal naming the holder ----
nbdsh -u "$(u p "$S2")" -c "
import time
h.pwrite(b'\x33' * 4096, 0); h.flush()
open('$T/held', 'w').close()
for _ in range(300):
    if __import__('os').path.exists('$T/release'):
        break
    time.sleep(0.1)
" &
HOLD=$!
_df_pids="$_df_pids $HOLD"
for _ in $(seq 50); do [ -f "$T/held" ] && break; sleep 0.1; done
t0=$(now)
rc=0; nbdsh -u "$(u p "$S1")" -c pass >"$T/out" 2>"$T/err" || rc=$?
waited=$(echo "$(now) - $t0" | bc)
[ "$rc" -ne 0 ] || fail "ss1 served device p while ss2 holds its lease"
grep -q "held by server ss2" "$T/ss1.log" || fail "ss1's refusal does not name ss2"
[ "$(echo "$waited >= 3" | bc)" = 1 ] || fail "refused after ${waited}s: no wait"
[ "$(echo "$waited < 15" | bc)" = 1 ] || fail "waited ${waited}s: unbounded"
touch "$T/release"
wait $HOLD
pass "held by ss2: ss1 waited ${waited}s, then refused naming ss2"

# ---- 3. kill -9 of the holder mid-run ------------------------------------
python3 "$WRITER" "$T/acks3" 0 "$S1" "$S2" 2>"$T/w3.err" &
W=$!
_df_pids="$_df_pids $W"
for _ in $(seq 150); do on_ss1 "$T/acks3" 30 && break; sleep 0.1; done
on_ss1 "$T/acks3" 30 || { cat "$T/w3.err"; fail "the writer is not writing through ss1"; }
t0=$(now)
kill -9 "$PID_ss1"
wait "$PID_ss1" 2>/dev/null || true
for _ in $(seq 200); do
  [ -n "$(stall "$T/acks3" "$t0")" ] && break
  kill -0 $W 2>/dev/null || break
  sleep 0.1
done
s3=$(stall "$T/acks3" "$t0")
[ -n "$s3" ] || { cat "$T/w3.err"; fail "no record acknowledged after kill -9"; }
sleep 0.5; touch "$T/acks3.stop"; wait $W || { cat "$T/w3.err"; fail "writer"; }
n=$(check_records "$T/acks3" "$S2") || fail "an acknowledged record was lost after kill -9"
grep -q "taken over from server ss1" "$T/ss2.log" || fail "ss2 did not log the takeover"
curl -s "http://127.0.0.1:$ADMIN_ss2/metrics" | grep -q '^diskfarm_cache_lease_takeovers_total [1-9]' ||
  fail "takeover metric"
journal_ok
echo "takeover stall after kill -9: ${s3} s (lease time ${TTL} ms)"
[ "$(echo "$s3 < 8" | bc)" = 1 ] || fail "stall ${s3}s"
pass "kill -9: $n acknowledged records intact on ss2, stall ${s3}s"
start_ss ss1 "$FARM"

# ---- 4. the paused process (SIGSTOP) --------------------------------------
cat >"$T/paused.py" <<PY
import nbd, os, time
h = nbd.NBD()
h.connect_uri("$(u p "$S1")")
h.pwrite(b'\xa1' * 4096, 1 << 20); h.flush()
open('$T/p-ready', 'w').close()
for _ in range(600):
    if os.path.exists('$T/p-go'):
        break
    time.sleep(0.05)
try:
    h.pwrite(b'\xa2' * 4096, 2 << 20); h.flush()
    print('acknowledged')
except nbd.Error as e:
    print('refused: %s' % e)
PY
python3 "$T/paused.py" >"$T/paused.out" 2>&1 &
P=$!
_df_pids="$_df_pids $P"
for _ in $(seq 100); do [ -f "$T/p-ready" ] && break; sleep 0.1; done
[ -f "$T/p-ready" ] || { cat "$T/paused.out"; fail "paused.py"; }
kill -STOP "$PID_ss1"
touch "$T/p-go"     # its next write waits in ss1's socket
t0=$(now)
nbdsh -u "$(u p "$S2")" -c "h.pwrite(b'\xb2' * 4096, 2 << 20); h.flush()" ||
  fail "ss2 did not take over from the paused ss1"
took=$(echo "$(now) - $t0" | bc)
kill -CONT "$PID_ss1"
wait $P
grep -q "^refused" "$T/paused.out" || fail "the resumed ss1 acknowledged: $(cat "$T/paused.out")"
grep -q "lease epoch [0-9]* lost" "$T/ss1.log" || fail "ss1 did not log the lost lease"
nbdsh -u "$(u p "$S2")" -c "
assert h.pread(4096, 2 << 20) == b'\xb2' * 4096, 'the stale server wrote'
assert h.pread(4096, 1 << 20) == b'\xa1' * 4096, 'a flushed write was lost'
" || fail "after SIGCONT"
journal_ok
pass "SIGSTOP: ss2 took over in ${took}s; the resumed ss1 refused its queued write"

# ---- 5. farm DB outage for the holder -------------------------------------
python3 "$WRITER" "$T/acks5" 0 "$S1" "$S2" 2>"$T/w5.err" &
W=$!
_df_pids="$_df_pids $W"
for _ in $(seq 150); do on_ss1 "$T/acks5" 20 && break; sleep 0.1; done
on_ss1 "$T/acks5" 20 || { cat "$T/w5.err"; fail "the writer is not writing through ss1"; }
t0=$(now)
touch "$T/ss1.dbdown"
for _ in $(seq 200); do
  grep -q "failing over" "$T/w5.err" && break
  sleep 0.1
done
# writing through ss2 meanwhile: until ss2 acknowledged a record (at most
# 20 s: its takeover waits for the lapsed lease + margin), then 1 s more
for _ in $(seq 200); do
  [ -n "$(stall "$T/acks5" "$t0")" ] && break
  sleep 0.1
done
sleep 1
touch "$T/acks5.stop"; wait $W || { cat "$T/w5.err"; fail "writer"; }
rm -f "$T/ss1.dbdown"
grep -q "failing over" "$T/w5.err" || fail "the writer never left ss1"
[ -n "$(stall "$T/acks5" "$t0")" ] || fail "ss2 acknowledged nothing after the DB outage began"
s5=$(max_gap "$T/acks5")
grep -q "cannot renew the cache lease" "$T/ss1.log" || fail "ss1 did not log the failed renewals"
n=$(check_records "$T/acks5" "$S2") || fail "an acknowledged record was lost in the DB outage"
journal_ok
echo "takeover stall in a DB outage of the holder: ${s5} s"
pass "DB outage of ss1: it stopped writing, ss2 took over; $n records intact"

# ---- 6. slow disk during the outage ---------------------------------------
kill -TERM "$PID_ss1"; wait "$PID_ss1" 2>/dev/null || true
start_ss ss1 "$FARM" DISKFARM_FAULT_FLUSH_DELAY_MS=6000
cat >"$T/slow.py" <<PY
import nbd, os, time
h = nbd.NBD()
h.connect_uri("$(u p "$S1")")
t = time.monotonic()
h.pwrite(b'\xc1' * 4096, 3 << 20); h.flush()
print('slow flush acknowledged in %.1f s' % (time.monotonic() - t), flush=True)
h.pwrite(b'\xc2' * 4096, 4 << 20)
open('$T/s-ready', 'w').close()
try:
    h.flush()
    print('acknowledged')
except nbd.Error as e:
    print('refused: %s' % e)
PY
python3 "$T/slow.py" >"$T/slow.out" 2>&1 &
P=$!
_df_pids="$_df_pids $P"
for _ in $(seq 150); do [ -f "$T/s-ready" ] && break; sleep 0.1; done
[ -f "$T/s-ready" ] || { cat "$T/slow.out" "$T/ss1.log"; fail "slow.py"; }
touch "$T/ss1.dbdown"
nbdsh -u "$(u p "$S2")" -c "h.pwrite(b'\xd2' * 4096, 4 << 20); h.flush()" ||
  fail "ss2 did not take over from the slow ss1"
wait $P
rm -f "$T/ss1.dbdown"
grep -q "slow flush acknowledged" "$T/slow.out" || fail "a slow flush with the DB up failed: $(cat "$T/slow.out")"
grep -q "^refused" "$T/slow.out" || fail "the slow flush was acknowledged after the takeover: $(cat "$T/slow.out")"
nbdsh -u "$(u p "$S2")" -c "
assert h.pread(4096, 4 << 20) == b'\xd2' * 4096, 'the slow server wrote after the takeover'
assert h.pread(4096, 3 << 20) == b'\xc1' * 4096, 'a flushed write was lost'
" || fail "after the slow flush"
journal_ok
pass "slow disk: the delayed flush was refused, not written after the takeover"

# ---- 6b. iSCSI: a lost lease answers "retry", not an I/O error -------------
# qemu-io (libiscsi) writes through ss1 (its flush delayed 6 s) while ss1
# is cut from the DB: the command in flight when the lease lapses gets NOT
# READY / BECOMING READY (02/04/01, which initiators retry: the survivor
# serves the retry), not MEDIUM ERROR nor the stale binding's 02/04/03.
ISCSI1=$(grep -o 'iscsi listening on [0-9.:]*' "$T/ss1.log" | tail -1 | sed 's|.*on ||')
logins() { grep -c "iSCSI login: .*-> iqn.2026-11.org.diskfarm:p" "$T/ss1.log" || true; }
l0=$(logins)
timeout 60 qemu-io -f raw -c 'write -P 0xe1 5M 4k' -c flush \
  "iscsi://$ISCSI1/iqn.2026-11.org.diskfarm:p/1" >"$T/q6.out" 2>&1 &
Q=$!
_df_pids="$_df_pids $Q"
for _ in $(seq 100); do [ "$(logins)" -gt "$l0" ] && break; sleep 0.1; done
[ "$(logins)" -gt "$l0" ] || { cat "$T/q6.out"; fail "qemu-io did not log in to ss1"; }
touch "$T/ss1.dbdown"
rc=0; wait $Q || rc=$?
rm -f "$T/ss1.dbdown"
[ "$rc" -ne 0 ] || fail "iSCSI: the write was acknowledged after the lease lapsed: $(cat "$T/q6.out")"
grep -q "NOT READY(2) ASCQ:.*(0x0401)" "$T/q6.out" ||
  fail "iSCSI: a lost lease did not answer NOT READY / BECOMING READY: $(cat "$T/q6.out")"
pass "iSCSI: the lost lease answered NOT READY, BECOMING READY (02/04/01)"
# libiscsi logs in again after the close: ss1 without the slow disk from
# here on (that session's last flush would stall what follows)
kill -TERM "$PID_ss1"; wait "$PID_ss1" 2>/dev/null || true
start_ss ss1 "$FARM"

# ---- tier 3: a local cache does not move ----------------------------------
qemu-io -f raw -c 'write -P 0x44 0 64k' "$(u s "$S1")" >/dev/null
qemu-io -f raw -c 'read -P 0x44 0 64k' "$(u s "$S1")" | grep -q 'read 65536' ||
  fail "ss1 lost its own server cache between connections"
rc=0; qemu-io -f raw -c 'read 0 4k' "$(u s "$S2")" >"$T/out" 2>&1 || rc=$?
grep -qi "input/output error" "$T/out" || fail "ss2 served device s's generation: $(cat "$T/out")"
grep -q "local disk: it cannot move to server ss2" "$T/ss2.log" || fail "no log line on ss2"
curl -s "http://127.0.0.1:$ADMIN_ss2/metrics" | grep -q '^diskfarm_cache_lost_total 1$' ||
  fail "lost-cache metric"
# iSCSI: the same device's first READ gets a CHECK CONDITION (MEDIUM ERROR)
ISCSI2=$(grep -o 'iscsi listening on [0-9.:]*' "$T/ss2.log" | tail -1 | sed 's|.*on ||')
rc=0; timeout 20 iscsi-perf -t 3 -x 0 "iscsi://$ISCSI2/iqn.2026-11.org.diskfarm:s/1" \
  >"$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "iSCSI reads of a lost cache succeeded: $(cat "$T/out")"
grep -qi "MEDIUM_ERROR\|medium error\|failed" "$T/out" || fail "iSCSI: $(cat "$T/out")"
json device show s
jcheck "$T/j.json" 'd["cache_lease"]["kind"] == "local"' 'd["cache_lease"]["holder"] == "ss1"' \
  'd["cache_lease"]["state"] == "local"'
df device reset s >/dev/null
json device show s
jcheck "$T/j.json" 'd["cache_lease"]["state"] == "stale"'
qemu-io -f raw -c 'read -P 0 0 64k' "$(u s "$S2")" | grep -q 'read 65536' ||
  fail "a new boot generation on ss2 did not get a fresh cache"
pass "tier 3: a local cache's generation gets EIO elsewhere, a log line, a metric"

# a private image on ss1's own disk outlives boots: ss2 refuses it in
# every generation; ss1 keeps serving it
qemu-io -f raw -c 'write -P 0x55 0 64k' "$(u v "$S1")" >/dev/null
rc=0; qemu-io -f raw -c 'read 0 4k' "$(u v "$S2")" >"$T/out" 2>&1 || rc=$?
grep -qi "input/output error" "$T/out" || fail "ss2 served ss1's private image: $(cat "$T/out")"
grep -q "device v has its lasting write cache on server ss1's local disk" "$T/ss2.log" ||
  fail "no log line on ss2 for the private image"
df device reset v >/dev/null
rc=0; qemu-io -f raw -c 'read 0 4k' "$(u v "$S2")" >"$T/out" 2>&1 || rc=$?
grep -qi "input/output error" "$T/out" || fail "ss2 served ss1's private image after a reboot"
qemu-io -f raw -c 'read -P 0x55 0 64k' "$(u v "$S1")" | grep -q 'read 65536' ||
  fail "ss1 lost its own private image"
json device show v
jcheck "$T/j.json" 'd["cache_lease"]["kind"] == "local"' 'd["cache_lease"]["holder"] == "ss1"' \
  'd["cache_lease"]["generation"] == -1' 'd["cache_lease"]["state"] == "local"'
df device remove v >/dev/null
df device add v --mac 52:54:00:00:00:03 --vdisk golden --cache private >/dev/null
qemu-io -f raw -c 'read 0 4k' "$(u v "$S2")" >"$T/out" 2>&1 && ! grep -qi "error" "$T/out" ||
  fail "a device v added again is still held by ss1's claim: $(cat "$T/out")"
pass "tier 3: a private image stays on its server's disk: refused elsewhere in every generation, until device remove"
journal_ok 10
cat "$T/journal.out"
pass "no two servers ever wrote the shared cache at once"
