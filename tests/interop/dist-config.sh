#!/bin/bash
# dist/diskfarm.conf is what streamsvc understands: the example, with its
# addresses moved to loopback port 0 and a private socket, starts every
# listener it names; an unknown value in it is refused with one line.
. "$TESTS_SRCDIR/lib.sh"
conf_src=$TESTS_SRCDIR/../../dist/diskfarm.conf
[ -f "$conf_src" ] || fail "no dist/diskfarm.conf"

df init >/dev/null
sed -e "s|^farm=.*|farm=$FARM|" \
    -e "s|^nbd-listen=.*|nbd-listen=127.0.0.1:0;unix:$T/nbd.sock|" \
    -e "s|^iscsi-listen=.*|iscsi-listen=127.0.0.1:0|" \
    -e "s|^admin-listen=.*|admin-listen=127.0.0.1:0|" "$conf_src" >"$T/df.conf"
# every key of the example survives the rewrite
for k in farm nbd-listen iscsi-listen admin-listen threads; do
  grep -q "^$k=" "$T/df.conf" || fail "example config lost key $k"
done
"$STREAMSVC" --config "$T/df.conf" >"$T/streamsvc.log" 2>&1 &
pid=$!
_df_pids="$_df_pids $pid"
for _ in $(seq 100); do grep -q 'admin listening' "$T/streamsvc.log" && break; sleep 0.1; done
for what in "nbd listening on 127.0.0.1:" "nbd listening on unix:$T/nbd.sock" \
            "iscsi listening on 127.0.0.1:" "admin listening on http://127.0.0.1:"; do
  grep -q "$what" "$T/streamsvc.log" || { cat "$T/streamsvc.log"; fail "config did not give: $what"; }
done
kill -TERM "$pid"; wait "$pid" || fail "streamsvc did not exit 0 on SIGTERM"

sed -i "s|^threads=.*|threads=many|" "$T/df.conf"
if "$STREAMSVC" --config "$T/df.conf" >"$T/bad.log" 2>&1; then fail "threads=many accepted"; fi
[ "$(wc -l <"$T/bad.log")" -eq 1 ] && grep -q "threads" "$T/bad.log" ||
  { cat "$T/bad.log"; fail "bad config value: not one precise line"; }
pass "dist/diskfarm.conf starts streamsvc with every listener; bad values refused"
