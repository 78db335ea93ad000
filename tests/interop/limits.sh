#!/bin/bash
# Connection limits (issue 14): a flood from one source leaves the other
# clients served, and a healthy idle session is never cut.
#
# streamsvc on 127.0.0.1 port 0 (NBD and iSCSI); the floods come from
# other loopback addresses (127.0.0.2, ...: separate sources), driven by
# flood.py; the served clients are nbdsh, qemu-io (iSCSI through libiscsi)
# and flood.py's own full NBD session.
#   1. per-source cap: 60 connections from one address, 20 served, 40
#      closed at once; another address is served meanwhile
#   2. handshake timeout: idle and one-byte-at-a-time NBD handshakes, idle
#      iSCSI connections are closed after --handshake-timeout
#   3. request timeout: a half-sent NBD request or iSCSI PDU is closed
#      after --request-timeout, while nbdsh and qemu-io sessions idle for
#      longer than every timeout stay up and still work
#   4. memory: 8 WRITEs of 32 MiB (all but the last 4 KiB sent) to a
#      read-only export, 200 handshakes stalled after one byte: streamsvc's
#      RSS stays small; the refused WRITEs keep the stream in step
#   5. fd limit: under RLIMIT_NOFILE 48, 100 connections: excess ones are
#      closed (not left hanging), the log stays small, the CPU stays low,
#      and clients are served again once the flood ends
. "$(dirname "$0")/lib.sh"
need nbdsh qemu-io qemu-img python3 prlimit ss
FLOOD="python3 $TESTS_SRCDIR/flood.py"

df init >/dev/null
qemu-img create -q -f raw "$T/disk.img" 16M
df vdisk import golden "$T/disk.img" >/dev/null
EXPORT=vdisk/golden
TARGET=iqn.2026-11.org.diskfarm:vdisk.golden

# start_limited LOG ARGS...: streamsvc on 127.0.0.1:0 (NBD, iSCSI); sets
# PID, NBD_PORT, ISCSI_PORT.
start_limited() {
  local log=$1; shift
  "$@" --farm "$FARM" --nbd-listen 127.0.0.1:0 --iscsi-listen 127.0.0.1:0 \
    --admin-listen none --threads 1 >"$log" 2>&1 &
  PID=$!
  _df_pids="$_df_pids $PID"
  for _ in $(seq 100); do grep -q 'iscsi listening' "$log" && break; sleep 0.1; done
  grep -q 'iscsi listening' "$log" || { cat "$log"; fail "streamsvc did not start"; }
  NBD_PORT=$(sed -n 's/.*nbd listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  ISCSI_PORT=$(sed -n 's/.*iscsi listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -1)
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
data_kib() { awk '/^VmData/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

start_limited "$T/streamsvc.log" "$STREAMSVC" --handshake-timeout 2 \
  --request-timeout 3 --max-connections-per-source 20
S=$PID

# Healthy sessions that stay idle through everything below (about 25 s):
# nbdsh reads after its sleep; qemu-io waits on a fifo.
nbdsh -u "nbd://127.0.0.1:$NBD_PORT/$EXPORT" \
  -c 'import time; time.sleep(22); h.pread(512, 0); print("nbdsh read ok")' \
  >"$T/nbdsh.log" 2>&1 &
NBDSH=$!
mkfifo "$T/qio.in"
qemu-io -r -f raw "iscsi://127.0.0.1:$ISCSI_PORT/$TARGET/1" \
  <"$T/qio.in" >"$T/qemu-io.log" 2>&1 &
QIO=$!
exec 9>"$T/qio.in"
echo "read 0 512" >&9
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
for _ in $(seq 50); do [ "$(established "$ISCSI_PORT")" -ge 1 ] && break; sleep 0.1; done
if [ "$(established "$ISCSI_PORT")" -lt 1 ]; then
  grep -q "Unknown protocol 'iscsi'" "$T/qemu-io.log" && skip "qemu without iSCSI (qemu-block-extra)"
  fail "qemu-io did not connect: $(cat "$T/qemu-io.log")"
fi

# ---- 1. per-source cap -------------------------------------------------------
$FLOOD hold 127.0.0.2 127.0.0.1 "$NBD_PORT" 60 4 >"$T/cap.out" &
HOLD=$!
sleep 1
$FLOOD nbd-session 127.0.0.1 127.0.0.1 "$NBD_PORT" "$EXPORT" >/dev/null ||
  fail "a client from another address was not served during the flood"
if $FLOOD nbd-session 127.0.0.2 127.0.0.1 "$NBD_PORT" "$EXPORT" >/dev/null 2>&1; then
  fail "a 21st connection from the flooding address was served"
fi
wait "$HOLD"
read -r _ greeted _ at_once _ later _ open <"$T/cap.out"
echo "cap flood: $(cat "$T/cap.out")"
[ "$greeted" -eq 20 ] && [ "$at_once" -eq 40 ] ||
  fail "per-source cap 20: want 20 served, 40 closed at once, got $(cat "$T/cap.out")"
[ "$open" -eq 0 ] || fail "held handshakes outlived --handshake-timeout 2: $(cat "$T/cap.out")"
$FLOOD nbd-session 127.0.0.2 127.0.0.1 "$NBD_PORT" "$EXPORT" >/dev/null ||
  fail "the flooding address not served again after its connections closed"
grep -q 'refused: 20 open from 127.0.0.2 already' "$T/streamsvc.log" ||
  fail "cap refusal not logged"
[ "$(grep -c 'refused: 20 open' "$T/streamsvc.log")" -le 2 ] ||
  fail "cap refusals not rate-limited: $(grep -c 'refused: 20 open' "$T/streamsvc.log") lines"
pass "per-source cap: 20 of 60 served, 40 closed at once, another address served meanwhile"

# ---- 2. handshake timeout -----------------------------------------------------
t0=$(date +%s%N)
$FLOOD hold 127.0.0.3 127.0.0.1 "$NBD_PORT" 20 6 --trickle >"$T/hs-nbd.out" &
H1=$!
$FLOOD hold 127.0.0.4 127.0.0.1 "$ISCSI_PORT" 20 6 >"$T/hs-iscsi.out" &
H2=$!
$FLOOD hold 127.0.0.5 127.0.0.1 "$NBD_PORT" 20 6 >"$T/hs-idle.out" &
H3=$!
sleep 1
$FLOOD nbd-session 127.0.0.1 127.0.0.1 "$NBD_PORT" "$EXPORT" >/dev/null ||
  fail "a client not served during the handshake flood"
wait "$H1" "$H2" "$H3"
for f in hs-nbd hs-iscsi hs-idle; do
  echo "handshake flood $f: $(cat "$T/$f.out")"
  grep -q 'closed-later 20 open 0' "$T/$f.out" ||
    fail "$f: stalled handshakes not all closed within 6 s (--handshake-timeout 2)"
done
grep -q 'no session within 2 s (--handshake-timeout)' "$T/streamsvc.log" ||
  fail "handshake timeout not logged"
pass "handshake timeout: 60 stalled handshakes (NBD trickle, NBD idle, iSCSI idle) closed, others served"

# ---- 3. request timeout ---------------------------------------------------------
$FLOOD nbd-partial 127.0.0.6 127.0.0.1 "$NBD_PORT" "$EXPORT" 5 6 >"$T/rq-nbd.out" &
R1=$!
$FLOOD iscsi-partial 127.0.0.7 127.0.0.1 "$ISCSI_PORT" "$TARGET" 5 6 >"$T/rq-iscsi.out" &
R2=$!
wait "$R1" || fail "nbd-partial: $(cat "$T/rq-nbd.out")"
wait "$R2" || fail "iscsi-partial: $(cat "$T/rq-iscsi.out")"
echo "partial NBD requests: $(cat "$T/rq-nbd.out"); partial iSCSI PDUs: $(cat "$T/rq-iscsi.out")"
grep -q 'closed 5 of 5' "$T/rq-nbd.out" || fail "half-sent NBD requests not closed (--request-timeout 3)"
grep -q 'closed 5 of 5' "$T/rq-iscsi.out" || fail "half-sent iSCSI PDUs not closed (--request-timeout 3)"
grep -q 'incomplete after 3 s (--request-timeout)' "$T/streamsvc.log" ||
  fail "request timeout not logged"
pass "request timeout: half-sent NBD requests and iSCSI PDUs closed"

# ---- 4. memory ------------------------------------------------------------------
rss0=$(rss_kib "$S")
coproc BW { $FLOOD nbd-bigwrite 127.0.0.8 127.0.0.1 "$NBD_PORT" "$EXPORT" 8 2; }
read -r -t 60 line <&"${BW[0]}" || fail "nbd-bigwrite did not get its writes out"
[ "$line" = ready ] || fail "nbd-bigwrite: $line"
sleep 0.5 # the last bytes read
rss1=$(rss_kib "$S")
read -r -t 60 line <&"${BW[0]}" || fail "nbd-bigwrite: no replies"
echo "8 x 32 MiB WRITEs (read-only export) held: RSS ${rss0} -> ${rss1} KiB; $line"
[ "$line" = "replies: 8 errors, 8 reads ok" ] || fail "refused WRITEs put the stream out of step: $line"
[ $((rss1 - rss0)) -lt $((32 * 1024)) ] ||
  fail "8 held 32 MiB WRITEs to a read-only export pin $((rss1 - rss0)) KiB"
# 200 handshakes stalled after one byte (from 10 addresses: under the
# cap): what they reserve shows in VmData (commit charge), touched or not
data0=$(data_kib "$S")
coproc ST { $FLOOD stall "$(seq -s, -f '127.0.0.%g' 10 19)" 127.0.0.1 "$NBD_PORT" 200 1; }
read -r -t 60 line <&"${ST[0]}" || fail "stall: no output"
[ "$line" = ready ] || fail "stall: $line"
sleep 0.5 # the last bytes read
data1=$(data_kib "$S")
read -r -t 60 line <&"${ST[0]}" || true
echo "200 one-byte handshakes: VmData ${data0} -> ${data1} KiB ($(( (data1 - data0) / 200 )) KiB each)"
[ $((data1 - data0)) -lt $((200 * 32)) ] ||
  fail "200 stalled handshakes reserve $((data1 - data0)) KiB (want < 32 KiB each)"
pass "memory: refused WRITE payloads not buffered, stalled handshakes small"

# ---- healthy idle sessions ------------------------------------------------------
wait "$NBDSH" || fail "idle nbdsh session cut: $(cat "$T/nbdsh.log")"
grep -q 'nbdsh read ok' "$T/nbdsh.log" || fail "nbdsh: $(cat "$T/nbdsh.log")"
[ "$(established "$ISCSI_PORT")" -ge 1 ] || fail "idle qemu-io iSCSI session cut"
echo "read 0 512" >&9
echo "quit" >&9
exec 9>&-
wait "$QIO" || true
[ "$(grep -c 'read 512/512' "$T/qemu-io.log")" -eq 2 ] ||
  fail "qemu-io after idling: $(cat "$T/qemu-io.log")"
pass "idle NBD and iSCSI sessions kept through every timeout and still served"

# ---- 5. fd limit ----------------------------------------------------------------
start_limited "$T/fdlimit.log" prlimit --nofile=48:48 "$STREAMSVC" \
  --handshake-timeout 0 --max-connections-per-source 0
F=$PID
log0=$(stat -c %s "$T/fdlimit.log")
$FLOOD hold 127.0.0.9 127.0.0.1 "$NBD_PORT" 100 5 >"$T/fd.out" &
HOLD=$!
sleep 1
c0=$(cpu_ticks "$F")
sleep 3
c1=$(cpu_ticks "$F")
wait "$HOLD"
log1=$(stat -c %s "$T/fdlimit.log")
hz=$(getconf CLK_TCK)
echo "fd limit flood: $(cat "$T/fd.out"); CPU $((c1 - c0)) ticks in 3 s (${hz}/s); log +$((log1 - log0)) bytes"
read -r _ greeted _ at_once _ <"$T/fd.out"
[ "$at_once" -gt 0 ] || fail "at the fd limit no connection was closed (they hang)"
[ $((c1 - c0)) -lt $((hz * 3 / 4)) ] || fail "at the fd limit streamsvc used $((c1 - c0)) ticks of CPU in 3 s"
[ $((log1 - log0)) -lt 4096 ] || fail "at the fd limit the log grew $((log1 - log0)) bytes"
grep -q 'accept: Too many open files' "$T/fdlimit.log" || fail "fd limit not logged"
sleep 0.5
$FLOOD nbd-session 127.0.0.1 127.0.0.1 "$NBD_PORT" "$EXPORT" >/dev/null ||
  fail "not served again after the fd-limit flood ended"
pass "fd limit: $at_once excess connections closed, CPU $((c1 - c0))/$((hz * 3)) ticks, log +$((log1 - log0)) B, served after"
kill -TERM "$F"
wait "$F" || fail "streamsvc (fd limit) exited $?"
kill -TERM "$S"
wait "$S" || fail "streamsvc exited $?"
