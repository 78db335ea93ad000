# Shared helpers for interop tests (sourced).  Each test gets a private
# temporary directory and a trap that stops what it started.
#   STREAMSVC, DISKFARM: binaries (set by meson; default to build paths)
set -eu

: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"

T=$(mktemp -d "${TMPDIR:-/tmp}/df-test.XXXXXX")
# The daemons, started as root, run as the diskfarm user that `diskfarm
# init` gives the farm to: it must be able to search its way to $FARM.
chmod 711 "$T"
FARM=$T/farm
export DISKFARM_FARM=$FARM
# an empty diskfarm.conf of the test's own: nothing on the host applies
: >"$T/empty.conf"
export DISKFARM_CONFIG=$T/empty.conf
_df_pids=""
_df_pg=""

df_cleanup() {
  local rc=$?
  for p in $_df_pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $_df_pids; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -f "$T/streamsvc.log" ]; then
    echo "--- streamsvc log (tail)"; tail -30 "$T/streamsvc.log"
  fi
  [ -z "$_df_pg" ] || pg_stop "$_df_pg"
  rm -rf "$T"
  exit "$rc"
}
trap df_cleanup EXIT
# bash runs no EXIT trap when a signal kills it (a meson timeout, ^C).
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
need() { for t in "$@"; do command -v "$t" >/dev/null || skip "$t not installed"; done; }
pass() { echo "ok: $*"; }

# Debian's python3 carries the nbd module nbdsh needs; prefer it.
export PATH=/usr/bin:/bin:$PATH

# DISKFARM_TEST_DB=pg (the "-pg" variants): the farm DB is a private
# PostgreSQL (tests/lib/pg.sh), database "farm", named to every program by
# the test's diskfarm.conf ([farm] database) and to the console also by
# $DISKFARM_DB (tests that write a diskfarm.conf of their own add
# "$DF_DB_CONF" to it).  Skips (77) when PostgreSQL is not installed.
DF_DB_CONF=""
if [ "${DISKFARM_TEST_DB:-}" = pg ]; then
  . "$(dirname "${BASH_SOURCE[0]}")/../lib/pg.sh"
  _df_pg=$T/pg
  _rc=0; pg_start "$_df_pg" || _rc=$?
  [ "$_rc" -ne 77 ] || { _df_pg=""; skip "PostgreSQL is not installed"; }
  [ "$_rc" -eq 0 ] || fail "could not start PostgreSQL"
  psql -X -q "$PG_CONNINFO" -c 'CREATE DATABASE farm' || fail "CREATE DATABASE farm"
  export DISKFARM_DB="${PG_CONNINFO% dbname=*} dbname=farm"
  DF_DB_CONF=$(printf '[farm]\ndatabase=%s' "$DISKFARM_DB")
  printf '%s\n' "$DF_DB_CONF" >"$T/empty.conf"
fi

df() { "$DISKFARM" --farm "$FARM" "$@"; }

# farm_db NAME: the --db of a second farm of the test (one of its own: a
# new PostgreSQL database NAME; nothing on SQLite, whose farm.db is in the
# farm directory).  Use as ${X_DB:+--db "$X_DB"}.
farm_db() {
  [ -n "$DF_DB_CONF" ] || return 0
  psql -X -q "$PG_CONNINFO" -c "CREATE DATABASE $1" || fail "CREATE DATABASE $1"
  echo "${PG_CONNINFO% dbname=*} dbname=$1"
}

# db_sql SQL: run SQL on the farm DB behind lib/farm's back (tampering),
# on whichever backend the test runs.
db_sql() {
  if [ -n "$DF_DB_CONF" ]; then
    psql -X -q -v ON_ERROR_STOP=1 "$DISKFARM_DB" -c "$1" >/dev/null
  else
    sqlite3 "$FARM/farm.db" "$1"
  fi
}

# jcheck FILE EXPR...: every Python expression (d = the parsed JSON) holds.
jcheck() {
  python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for expr in sys.argv[2:]:
    if not eval(expr):
        sys.exit("JSON check failed: %s\n%s" % (expr, json.dumps(d, indent=1)))
PY
}

# json CMD...: run diskfarm --json CMD into $T/j.json (must exit 0).
json() { df --json "$@" >"$T/j.json" || fail "diskfarm --json $* failed"; }

# Start streamsvc on a unix socket ($SOCK) and a loopback admin port.
# Extra arguments go to streamsvc.  Sets STREAMSVC_PID, SOCK, ADMIN and
# ADMIN_TOKEN (the farm's bearer token, for admin_curl).
start_streamsvc() {
  # in the farm's run/: the diskfarm user streamsvc drops to removes it at exit
  SOCK=$FARM/run/nbd.sock
  [ -d "$FARM/run" ] || SOCK=$T/nbd.sock
  rm -f "$SOCK"
  # the log is appended to: read only what this start writes (a restart
  # must not take the previous process's admin port)
  local from=$(( $(stat -c %s "$T/streamsvc.log" 2>/dev/null || echo 0) + 1 ))
  "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$SOCK" \
    --admin-listen 127.0.0.1:0 "$@" >>"$T/streamsvc.log" 2>&1 &
  STREAMSVC_PID=$!
  _df_pids="$_df_pids $STREAMSVC_PID"
  for _ in $(seq 100); do
    if [ -S "$SOCK" ] && tail -c "+$from" "$T/streamsvc.log" | grep -q "admin.*listening\|listening.*admin"; then
      ADMIN=$(tail -c "+$from" "$T/streamsvc.log" | grep -o 'admin[^ ]* listening on http://[0-9.:]*' |
              tail -1 | sed 's|.*http://||')
      ADMIN_TOKEN=$(df farm admin-token) || fail "diskfarm farm admin-token"
      export ADMIN_TOKEN
      return 0
    fi
    kill -0 "$STREAMSVC_PID" 2>/dev/null || { cat "$T/streamsvc.log"; fail "streamsvc exited"; }
    sleep 0.1
  done
  cat "$T/streamsvc.log"; fail "streamsvc did not start"
}

# curl with the admin API's bearer token (every endpoint but /metrics and
# /v1/health needs it over TCP).
admin_curl() { curl -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }

# wait_started PID LOG TEXT WHAT [NEVER]: until process PID's LOG has
# TEXT (at most 10 s).  Fails with the log when PID exits first ("WHAT
# exited") or TEXT never comes (NEVER, default "WHAT did not start").
wait_started() {
  for _ in $(seq 100); do
    grep -q "$3" "$2" && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2"; fail "$4 exited"; }
    sleep 0.1
  done
  cat "$2"; fail "${5:-$4 did not start}"
}

# wait_registered NAME PID LOG: until streamsvc PID logs its registration
# as NAME in LOG (at most 10 s); fails when it exits or never registers.
wait_registered() {
  wait_started "$2" "$3" "registry: registered as streamsvc $1" "streamsvc $1" \
    "$1 did not register"
}

# iscsi_port: the loopback iSCSI port streamsvc logged it listens on
# (start_streamsvc --iscsi-listen 127.0.0.1:0).
iscsi_port() {
  grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://'
}

# wait_live DEVICE: until streamsvc's /v1/sessions lists a session of
# DEVICE (at most 30 s): a client started in the background is connected.
wait_live() {
  for _ in $(seq 300); do
    admin_curl -sf "http://$ADMIN/v1/sessions" | python3 -c 'import json, sys
sys.exit(0 if any(s.get("device") == sys.argv[1] for s in json.load(sys.stdin)) else 1)' "$1" &&
      return 0
    sleep 0.1
  done
  fail "no session of device $1 after 30 s"
}

stop_streamsvc() { # signal (default TERM)
  local sig=${1:-TERM}
  kill "-$sig" "$STREAMSVC_PID"
  wait "$STREAMSVC_PID" 2>/dev/null || true
}

# nbd URI for an export over the unix socket
uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

# A raw disk of $2 MiB at $1 with recognisable data at a few offsets.
make_raw() {
  truncate -s "${2}M" "$1"
  for off in 0 1 7 33; do
    [ "$off" -lt "$2" ] || continue
    head -c 65536 /dev/urandom | dd of="$1" bs=64K seek=$((off * 16)) conv=notrunc status=none
  done
  printf 'DISKFARM-BASE' | dd of="$1" bs=1 seek=512 conv=notrunc status=none
}

# one_line LABEL REGEX PROG FILE: FILE is one line "PROG: ..." matching REGEX,
# valid UTF-8.
one_line() {
  local label=$1 re=$2 prog=$3 f=$4
  [ "$(wc -l <"$f")" -eq 1 ] || fail "$label: stderr is not one line: $(cat "$f")"
  grep -q "^$prog: " "$f" || fail "$label: stderr lacks '$prog: ': $(cat "$f")"
  grep -Eqi -- "$re" "$f" || fail "$label: '$(cat "$f")' does not match /$re/"
  python3 -c 'import sys; open(sys.argv[1], encoding="utf-8", errors="strict").read()' "$f" ||
    fail "$label: message is not valid UTF-8"
}

# bad LABEL REGEX ARGS...: diskfarm ARGS exits 1 with one stderr line
# "diskfarm: ..." matching REGEX (one_line), prints nothing on stdout and
# changes nothing: the script's snapshot function (everything a refused
# command must leave as it was) prints the same before and after.
bad() {
  local label=$1 re=$2 rc=0 before after
  shift 2
  before=$(snapshot)
  df "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq 1 ] || fail "$label: exit status $rc, expected 1 ($(cat "$T/err"))"
  one_line "$label" "$re" diskfarm "$T/err"
  [ ! -s "$T/out" ] || fail "$label: printed on stdout: $(cat "$T/out")"
  after=$(snapshot)
  [ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "$label: farm changed"; }
  pass "$label -> $(cat "$T/err")"
}

# A new farm with vdisk $1 (version 0) imported from $T/base.raw, a
# make_raw of $2 MiB.
init_vdisk() { # vdisk mib
  df init >/dev/null
  make_raw "$T/base.raw" "$2"
  df vdisk import "$1" "$T/base.raw" >/dev/null
}
