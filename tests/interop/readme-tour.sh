#!/bin/bash
# README.md followed literally: every command line of its "Quick tour"
# (both code blocks, up to "## Write caches") runs in order, against the
# real binaries, with only what a test must change: /srv/farm -> a
# temporary farm, listen addresses -> loopback port 0 (and the admin
# port too), `server:10809` -> the port streamsvc got, and the
# qemu-system boot -> a qemu-io write to the same URL (no OS to boot).
# Then the outcome the README promises is checked.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
README=$TESTS_SRCDIR/../../README.md
[ -f "$README" ] || fail "no README at $README"

mkdir -p "$T/bin" "$T/work"
ln -s "$DISKFARM" "$T/bin/diskfarm"
ln -s "$STREAMSVC" "$T/bin/streamsvc"
export PATH=$T/bin:$PATH
unset DISKFARM_FARM   # the README exports it itself

# Indented lines of the section, continuation lines joined.
sed -n '/^## Quick tour/,/^## Write caches/p' "$README" | grep '^    ' |
  sed 's/^    //' | sed -e ':a' -e '/\\$/N; s/\\\n *//; ta' >"$T/tour"
[ "$(wc -l <"$T/tour")" -ge 8 ] || { cat "$T/tour"; fail "tour not found in README"; }

cd "$T/work"
PORT=
n=0
while IFS= read -r line; do
  n=$((n + 1))
  cmd=${line//\/srv\/farm/$FARM}
  cmd=$(printf '%s' "$cmd" | sed 's/ \[\(--[^]]*\)\]/ \1/')
  case "$cmd" in
    streamsvc*)
      cmd=${cmd//0.0.0.0:10809/127.0.0.1:0}
      cmd=${cmd//0.0.0.0:3260/127.0.0.1:0}
      cmd="${cmd%&} --admin-listen 127.0.0.1:0 >>$T/streamsvc.log 2>&1 &"
      eval "$cmd"
      _df_pids="$_df_pids $!"
      for _ in $(seq 100); do
        PORT=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://' || true)
        [ -n "$PORT" ] && break
        sleep 0.1
      done
      [ -n "$PORT" ] || fail "README line $n: streamsvc did not start"
      continue ;;
    qemu-system-x86_64*)
      url=$(printf '%s' "$cmd" | sed 's/.*file=\([^,]*\),.*/\1/')
      cmd="qemu-io -f raw -c 'write -P 0x11 0 1M' $url" ;;
  esac
  cmd=${cmd//server:10809/127.0.0.1:$PORT}
  echo "+ $cmd"
  eval "$cmd" >"$T/out" 2>&1 || { cat "$T/out"; fail "README line $n failed: $line"; }
  cat "$T/out"
done <"$T/tour"

# What the README says happened
[ "$DISKFARM_FARM" = "$FARM" ] || fail "DISKFARM_FARM not exported by the tour"
diskfarm --json version list win10 >"$T/v.json"
jcheck "$T/v.json" \
  "[(v['version'], v['state']) for v in d] == [(0, 'production'), (1, 'test'), (2, 'production')]" \
  "[v['parent'] for v in d][2] is None"
qemu-io -r -f raw -c 'read -P 0x55 0 1M' "nbd://127.0.0.1:$PORT/vdisk/win10" | grep -q 'read 1048576' ||
  fail "vdisk/win10 (production) lacks the update"
qemu-io -r -f raw -c 'read -P 0 0 1M' "nbd://127.0.0.1:$PORT/vdisk/win10@0" | grep -q 'read 1048576' ||
  fail "version 0 changed"
diskfarm --json device show pc01 >"$T/d.json"
jcheck "$T/d.json" "d['generation'] == 2" "d['cache_mode'] == 'ram:512'"
pass "README quick tour and golden-image update run as written ($n lines)"
