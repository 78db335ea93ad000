#!/bin/bash
# A private PostgreSQL for the tests, from Debian's postgresql package:
# initdb + pg_ctl in a directory of the test's own, a UNIX socket only
# (listen_addresses = ''), never the system service.  PostgreSQL refuses
# to run as root, so as root the server runs as the postgres user the
# package makes (or nobody).  The initdb is made once per build directory
# (a template under $DF_PG_TEMPLATE_DIR, default /tmp) and copied per test.
#
# As a command (used by the C fixture tests/unit/test-db.c):
#   pg.sh start DIR   start a server in DIR; prints its conninfo
#                     ("host=DIR/sock user=U dbname=postgres"); exit 77
#                     when PostgreSQL is not installed
#   pg.sh stop DIR    stop it (immediate)
# Sourced by shell tests (tests/interop/lib.sh) it only defines pg_start
# and pg_stop, which do the same and set PG_CONNINFO.
set -eu

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

# The unprivileged user the server runs as (empty: the caller, not root).
pg_user() {
  if [ "$(id -u)" -ne 0 ]; then echo ""; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

pg_as() { # user cmd...
  local u=$1; shift
  if [ -n "$u" ]; then setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups -- "$@"
  else "$@"; fi
}

# A template cluster made once (under a lock) and copied by pg_start.
pg_template() { # bindir user
  local bin=$1 u=$2 base=${DF_PG_TEMPLATE_DIR:-/tmp}
  local tpl="$base/diskfarm-pg-template-$(id -u)-${u:-self}-$(basename "$(dirname "$bin")")"
  (
    flock 9
    if [ ! -f "$tpl/ready" ]; then
      rm -rf "$tpl"; mkdir -p "$tpl"
      [ -z "$u" ] || chown "$u" "$tpl"
      pg_as "$u" "$bin/initdb" -D "$tpl/data" -A trust -E UTF8 --no-locale \
        --no-sync >"$tpl/initdb.log" 2>&1 || { cat "$tpl/initdb.log" >&2; exit 1; }
      cat >>"$tpl/data/postgresql.conf" <<CONF
listen_addresses = ''
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
logging_collector = off
CONF
      touch "$tpl/ready"
    fi
  ) 9>"$base/diskfarm-pg-template-$(id -u).lock"
  echo "$tpl"
}

pg_start() { # dir: sets PG_CONNINFO
  local dir=$1 bin u tpl
  bin=$(pg_bindir) || return 77
  u=$(pg_user)
  tpl=$(pg_template "$bin" "$u") || return 1
  mkdir -p "$dir/sock"
  cp -a "$tpl/data" "$dir/data"
  chmod 700 "$dir/data"
  : >"$dir/log"
  [ -z "$u" ] || chown -R "$u" "$dir/data" "$dir/sock" "$dir/log"
  pg_as "$u" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-k $dir/sock -c listen_addresses=" start >/dev/null ||
    { cat "$dir/log" >&2; return 1; }
  chmod 755 "$dir/sock"
  PG_CONNINFO="host=$dir/sock user=${u:-$(id -un)} dbname=postgres"
}

pg_restart() { # dir: start again a server pg_stop stopped (same conninfo)
  local dir=$1 bin u
  bin=$(pg_bindir) || return 77
  u=$(pg_user)
  pg_as "$u" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-k $dir/sock -c listen_addresses=" start >/dev/null ||
    { cat "$dir/log" >&2; return 1; }
}

pg_stop() { # dir
  local dir=$1 bin u
  bin=$(pg_bindir) || return 0
  u=$(pg_user)
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pg_as "$u" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# For the e2e tests on a namespace LAN (root): a private PostgreSQL in
# network namespace NS listening on ADDR:5432 (trust for ADDR's /24) and
# on DIR/sock, with MAXCONN connections and a database "farm";
# PG_LAN_DB is its conninfo as the servers use it.  pg_lan_up NS DIR
# starts it again, pg_lan_down DIR [MODE] stops it (fast; immediate in a
# cleanup).
pg_lan_start() { # ns addr maxconn dir
  local ns=$1 addr=$2 maxconn=$3 dir=$4 bin u
  bin=$(pg_bindir) && u=$(pg_user)
  mkdir -p "$dir/sock"
  [ -z "$u" ] || chown "$u" "$dir" "$dir/sock"
  pg_as "$u" "$bin/initdb" -D "$dir/data" -A trust -E UTF8 --no-locale \
    --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '$addr'
unix_socket_directories = '$dir/sock'
fsync = off
max_connections = $maxconn
CONF
  echo "host all all ${addr%.*}.0/24 trust" >>"$dir/data/pg_hba.conf"
  pg_lan_up "$ns" "$dir" || return 1
  psql -X -q -h "$dir/sock" -U postgres -d postgres -c 'CREATE DATABASE farm' || return 1
  PG_LAN_DB="host=$addr port=5432 user=postgres dbname=farm connect_timeout=2"
}
pg_lan_up() { # ns dir
  local bin u
  bin=$(pg_bindir) && u=$(pg_user)
  ip netns exec "$1" setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups -- \
    "$bin/pg_ctl" -D "$2/data" -l "$2/log" -w -t 60 start >/dev/null ||
    { cat "$2/log"; return 1; }
}
pg_lan_down() { # dir [mode]
  pg_as "$(pg_user)" "$(pg_bindir)/pg_ctl" -D "$1/data" -m "${2:-fast}" -w stop >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) rc=0; pg_start "$2" || rc=$?; [ "$rc" -eq 0 ] || exit "$rc"; echo "$PG_CONNINFO" ;;
    stop) pg_stop "$2" ;;
    *) echo "usage: pg.sh start|stop DIR" >&2; exit 2 ;;
  esac
fi
