#!/bin/bash
# The installed systemd units are sandboxed: systemd-analyze security
# (offline, on the units meson generated) scores each at most 2.5.
set -eu
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || skip "systemd-analyze not installed"
: "${DIST_BUILDDIR:?DIST_BUILDDIR not set}"
MAX=2.5
for u in streamsvc bootstrapsvc streamsvc-relay; do
  unit=$DIST_BUILDDIR/$u.service
  [ -f "$unit" ] || fail "no $unit"
  out=$(systemd-analyze security --offline=true "$unit" 2>&1) ||
    { echo "$out"; fail "systemd-analyze security $u.service failed"; }
  score=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || { echo "$out"; fail "$u.service: no exposure level in the output"; }
  echo "$u.service: exposure $score (at most $MAX)"
  if ! awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s <= m) }'; then
    echo "$out" | grep '✗'
    fail "$u.service: exposure $score is above $MAX"
  fi
done
echo "ok: both units at most $MAX"
