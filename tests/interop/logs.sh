#!/bin/bash
# What the daemons write to stderr when it is not the journal: every line
# starts with an ISO-8601 UTC time, the program and its pid; a fatal
# error once running is one such "error:" line; one iSCSI login line per
# session (iscsi-ls -s opens one session per target it lists);
# bootstrapsvc logs each file sent only with -v, as its --help says.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bootstrap-lib.sh"
need iscsi-ls tftp curl

TS='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'
# all_stamped LOG PROG: every line of LOG is "TIME PROG[PID]: LEVEL: text"
all_stamped() {
  local bad
  bad=$(grep -Ev "^$TS $2\[[0-9]+\]: (error|critical|warning|notice|info|debug): " "$1" || true)
  [ -z "$bad" ] || { echo "$bad"; fail "$2: log lines without a timestamp"; }
  [ -s "$1" ] || fail "$2: empty log"
}

make_raw "$T/disk.raw" 8
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
for i in 1 2 3; do
  df device add "d$i" --mac "52:54:00:00:00:0$i" --vdisk golden >/dev/null
done

# streamsvc: a fatal error once it runs (here: a socket it cannot bind) is
# one stamped line; a bad option stays "streamsvc: ..." like any command
if "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/nodir/x.sock" \
     --admin-listen none >"$T/fatal.log" 2>&1; then
  fail "streamsvc started on an unbindable socket"
fi
cat "$T/fatal.log"
all_stamped "$T/fatal.log" streamsvc
[ "$(grep -c ': error: ' "$T/fatal.log")" = 1 ] || fail "not one error line"
pass "streamsvc: fatal start-up error is one timestamped error line"

start_streamsvc --iscsi-listen 127.0.0.1:0
P=$(iscsi_port)
[ -n "$P" ] || fail "no iSCSI listener"
# one login line per session: discovery alone, then discovery + one
# session per listed target (vdisk.golden, d1, d2, d3) for -s
logins() { grep -c 'iSCSI login: ' "$T/streamsvc.log" || true; }
timeout 30 iscsi-ls "iscsi://127.0.0.1:$P" >"$T/ls" || fail "iscsi-ls"
[ "$(grep -c '^Target:' "$T/ls")" = 4 ] || { cat "$T/ls"; fail "iscsi-ls lists 4 targets"; }
sleep 0.3
[ "$(logins)" = 1 ] || { cat "$T/streamsvc.log"; fail "iscsi-ls: $(logins) login lines for 1 session"; }
timeout 30 iscsi-ls -s "iscsi://127.0.0.1:$P" >"$T/ls" || fail "iscsi-ls -s"
sleep 0.3
[ "$(logins)" = 6 ] || { cat "$T/streamsvc.log"; fail "iscsi-ls -s: $(($(logins) - 1)) login lines for 5 sessions"; }
stop_streamsvc
all_stamped "$T/streamsvc.log" streamsvc
pass "streamsvc: every line timestamped; one iSCSI login line per session"

# bootstrapsvc: files sent are logged with -v only
printf 'hello' >"$FARM/boot/hello.bin"
fetch() { # tftp then http
  (cd "$T" && tftp -m binary 127.0.0.1 "$TFTP_PORT" -c get hello.bin got) >/dev/null 2>&1
  cmp "$FARM/boot/hello.bin" "$T/got" || fail "tftp get"
  curl -sS "http://127.0.0.1:$HTTP_PORT/hello.bin" | cmp - "$FARM/boot/hello.bin" || fail "http get"
}
start_bootstrapsvc
fetch
kill -TERM "$BS_PID"; wait "$BS_PID" 2>/dev/null || true
cat "$BS_LOG"
grep -q 'sent hello.bin' "$BS_LOG" && fail "files sent logged without -v"
all_stamped "$BS_LOG" bootstrapsvc
cp "$BS_LOG" "$T/quiet.log"
start_bootstrapsvc -v
fetch
wait_log 'http: sent hello.bin (5 bytes)' || { cat "$BS_LOG"; fail "-v: no http line"; }
grep -q 'tftp 127.0.0.1:[0-9]*: sent hello.bin (5 bytes' "$BS_LOG" || { cat "$BS_LOG"; fail "-v: no tftp line"; }
kill -TERM "$BS_PID"; wait "$BS_PID" 2>/dev/null || true
all_stamped "$BS_LOG" bootstrapsvc
pass "bootstrapsvc: files sent logged with -v only; every line timestamped"

# bootstrapsvc: a fatal start-up error is one stamped line too
if "$BOOTSTRAPSVC" --farm "$T/nope" --address 127.0.0.1 --http-port 0 \
     --tftp-port 0 --dhcp-port 0 --pxe-port 0 >"$T/bfatal.log" 2>&1; then
  fail "bootstrapsvc started on a missing farm"
fi
cat "$T/bfatal.log"
all_stamped "$T/bfatal.log" bootstrapsvc
pass "bootstrapsvc: fatal start-up error timestamped"
