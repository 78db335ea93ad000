#!/bin/bash
# diskfarm.conf, the one configuration of every program:
#   - dist/diskfarm.conf documents every key the programs know, and with
#     its addresses moved to loopback it starts every streamsvc listener;
#   - each program reads it (streamsvc listens where it says, the console
#     and bootstrapsvc use its [farm] dir, bootstrapsvc its address and
#     ports, bdm its servers), through --config or $DISKFARM_CONFIG;
#   - the command line wins over the file; $DISKFARM_FARM over [farm] dir;
#   - an unknown group or key, or a bad value, stops each program with the
#     exact "FILE:LINE: ..." line and a nonzero exit before it does
#     anything (no socket, no farm, no boot medium).
. "$TESTS_SRCDIR/lib.sh"
. "$TESTS_SRCDIR/bootstrap-lib.sh"
need nbdinfo qemu-img curl
conf_src=$TESTS_SRCDIR/../../dist/diskfarm.conf
[ -f "$conf_src" ] || fail "no dist/diskfarm.conf"
BDM=${BDM:-${TESTS_BUILDDIR:?}/../../bdm/bdm}

df init >/dev/null
qemu-img create -q -f raw "$T/disk.raw" 1M
df vdisk import base "$T/disk.raw" --format raw >/dev/null

# ---- dist/diskfarm.conf documents every key ----------------------------------
"$DISKFARM" --json config show >"$T/keys.json" || fail "config show"
python3 - "$conf_src" "$T/keys.json" <<'PY' || fail "dist/diskfarm.conf and the schema differ"
import json, re, sys
group, doc = None, set()
for line in open(sys.argv[1]):
    m = re.match(r'^\[(.*)\]\s*$', line)
    if m:
        group = m.group(1)
        continue
    m = re.match(r'^#?([a-z][a-z0-9-]*)=', line)
    if m:
        doc.add("%s.%s" % (group, m.group(1)))
keys = {k["key"] for k in json.load(open(sys.argv[2]))}
if doc != keys:
    sys.exit("undocumented: %s; unknown: %s" % (sorted(keys - doc), sorted(doc - keys)))
PY
"$DISKFARM" --config "$conf_src" config show >/dev/null ||
  fail "the console refuses dist/diskfarm.conf"
pass "dist/diskfarm.conf documents every key of the schema, and loads"

# ---- streamsvc: the example with its addresses on loopback --------------------
sed -e "s|^dir=.*|dir=$FARM|" \
    -e "s|^nbd-listen=.*|nbd-listen=127.0.0.1:0;unix:$T/nbd.sock|" \
    -e "s|^iscsi-listen=.*|iscsi-listen=127.0.0.1:0|" \
    -e "s|^#admin-listen=.*|admin-listen=127.0.0.1:0|" "$conf_src" >"$T/df.conf"  # commented out in the example: the socket only
# a -pg run: the farm's PostgreSQL database, as a site would set it
[ -z "$DF_DB_CONF" ] || sed -i "s|^#database=.*|database=$DISKFARM_DB|" "$T/df.conf"
for k in dir nbd-listen iscsi-listen admin-listen threads; do
  grep -q "^$k=" "$T/df.conf" || fail "example config lost key $k"
done

# run_streamsvc LOG ARGS...: start streamsvc, wait for its admin line
run_streamsvc() {
  local log=$1; shift
  env -u DISKFARM_FARM "$STREAMSVC" "$@" >"$log" 2>&1 &
  pid=$!
  _df_pids="$_df_pids $pid"
  wait_started "$pid" "$log" 'admin listening' streamsvc
}
stop() { kill -TERM "$pid"; wait "$pid" || fail "streamsvc did not exit 0 on SIGTERM"; }

run_streamsvc "$T/streamsvc.log" --config "$T/df.conf"
for what in "nbd listening on 127.0.0.1:" "nbd listening on unix:$T/nbd.sock" \
            "iscsi listening on 127.0.0.1:" "admin listening on http://127.0.0.1:"; do
  grep -q "$what" "$T/streamsvc.log" || { cat "$T/streamsvc.log"; fail "config did not give: $what"; }
done
# [farm] dir is the farm it serves: the vdisk imported above, over the socket
size=$(nbdinfo --size "nbd+unix:///vdisk/base?socket=$T/nbd.sock") || fail "nbdinfo on the configured socket"
[ "$size" -eq 1048576 ] || fail "vdisk/base size $size"
stop
pass "dist/diskfarm.conf starts streamsvc with every listener, on the [farm] dir it names"

# $DISKFARM_CONFIG instead of --config; the command line wins over the file
rm -f "$T/nbd.sock"
DISKFARM_CONFIG=$T/df.conf run_streamsvc "$T/env.log"
grep -q "nbd listening on unix:$T/nbd.sock" "$T/env.log" || { cat "$T/env.log"; fail "\$DISKFARM_CONFIG not read"; }
stop
rm -f "$T/nbd.sock"
DISKFARM_CONFIG=$T/df.conf run_streamsvc "$T/cli.log" --nbd-listen "unix:$T/cli.sock" --admin-listen 127.0.0.1:0
grep -q "nbd listening on unix:$T/cli.sock" "$T/cli.log" && ! grep -q "nbd listening on unix:$T/nbd.sock" "$T/cli.log" &&
  [ ! -e "$T/nbd.sock" ] || { cat "$T/cli.log"; fail "--nbd-listen did not replace [streamsvc] nbd-listen"; }
nbdinfo --size "nbd+unix:///vdisk/base?socket=$T/cli.sock" >/dev/null || fail "nbdinfo on the --nbd-listen socket"
stop
pass "streamsvc: \$DISKFARM_CONFIG read; --nbd-listen wins over the file"

# ---- errors: one exact line, nonzero, nothing done ---------------------------
# refused PROGRAM WANT CMD...: CMD fails with exactly "PROGRAM: WANT"
refused() {
  local prog=$1 want=$2; shift 2
  if "$@" >"$T/bad.out" 2>"$T/bad.err"; then fail "$prog accepted: $want"; fi
  [ "$(cat "$T/bad.err")" = "$prog: $want" ] ||
    fail "$prog: got '$(cat "$T/bad.err")', want '$prog: $want'"
}
cp "$T/df.conf" "$T/typo.conf"
sed -i "s|^nbd-listen=|nbd_listen=|" "$T/typo.conf"
line=$(grep -n '^nbd_listen=' "$T/typo.conf" | cut -d: -f1)
rm -f "$T/nbd.sock"
refused streamsvc "$T/typo.conf:$line: unknown key 'nbd_listen' in group [streamsvc]" \
  "$STREAMSVC" --config "$T/typo.conf"
[ ! -e "$T/nbd.sock" ] || fail "streamsvc listened with a mistyped key"
printf '[farm]\ndir=%s\n[streamsvc]\nnbd_listen=:1\n' "$T/newfarm" >"$T/typo2.conf"
refused diskfarm "$T/typo2.conf:4: unknown key 'nbd_listen' in group [streamsvc]" \
  env -u DISKFARM_FARM "$DISKFARM" --config "$T/typo2.conf" init
[ ! -e "$T/newfarm" ] || fail "diskfarm init made a farm with a broken diskfarm.conf"
refused diskfarm "$T/typo2.conf:4: unknown key 'nbd_listen' in group [streamsvc]" \
  env DISKFARM_CONFIG="$T/typo2.conf" "$DISKFARM" bootstrap dhcp-config --address 10.0.0.5
refused bootstrapsvc "$T/typo2.conf:4: unknown key 'nbd_listen' in group [streamsvc]" \
  "$BOOTSTRAPSVC" --config "$T/typo2.conf" --address 127.0.0.1 --http-port 0 --tftp-port 0 \
  --dhcp-port 0 --pxe-port 0 --user "$(id -un)"
refused bdm "$T/typo2.conf:4: unknown key 'nbd_listen' in group [streamsvc]" \
  "$BDM" partition "$T/bad.img" --config "$T/typo2.conf" --server 10.0.0.5
[ ! -e "$T/bad.img" ] || fail "bdm wrote a medium with a broken diskfarm.conf"
printf '# site\n[streamsrv]\nthreads=1\n' >"$T/group.conf"
refused streamsvc "$T/group.conf:2: unknown group [streamsrv]" "$STREAMSVC" --config "$T/group.conf"
sed "s|^threads=.*|threads=many|" "$T/df.conf" >"$T/value.conf"
line=$(grep -n '^threads=' "$T/value.conf" | cut -d: -f1)
refused streamsvc "$T/value.conf:$line: [streamsvc] threads: 'many' is not an integer from 0 to 256" \
  "$STREAMSVC" --config "$T/value.conf"
sed "s|^iscsi-listen=.*|iscsi-listen=127.0.0.1:0;10.0.0:3260|" "$T/df.conf" >"$T/addr.conf"
line=$(grep -n '^iscsi-listen=' "$T/addr.conf" | cut -d: -f1)
refused streamsvc "$T/addr.conf:$line: [streamsvc] iscsi-listen: invalid address '10.0.0:3260': '10.0.0' is not an IP address" \
  "$STREAMSVC" --config "$T/addr.conf"
printf '[bootstrapsvc]\naddress=10.0.0.256\n' >"$T/bsaddr.conf"
refused bootstrapsvc "$T/bsaddr.conf:2: [bootstrapsvc] address: '10.0.0.256' is not an IPv4 address" \
  "$BOOTSTRAPSVC" --config "$T/bsaddr.conf"
# a port given on the command line, below (checked before the file is
# read) and above the range (checked after it filled the others)
refused bootstrapsvc "port -5 is outside 0-65535" \
  "$BOOTSTRAPSVC" --config "$T/bsaddr.conf" --http-port -5
refused bootstrapsvc "port 70000 is outside 0-65535" \
  "$BOOTSTRAPSVC" --config "$T/df.conf" --address 127.0.0.1 --tftp-port 70000
printf '[bdm]\nserver=10.0.0.5;a:b:c\n' >"$T/bdmsrv.conf"
refused bdm "$T/bdmsrv.conf:2: [bdm] server: bad server 'a:b:c': expected HOST[:PORT] or [IPV6][:PORT]" \
  "$BDM" script - --config "$T/bdmsrv.conf"
refused streamsvc "configuration file $T/none.conf does not exist" "$STREAMSVC" --config "$T/none.conf"
refused diskfarm "configuration file $T/none.conf does not exist" \
  env DISKFARM_CONFIG="$T/none.conf" "$DISKFARM" config show
# dead-peer settings: the schema's ranges, the gap below 6 s of
# tcp-keepalive, the same on the command line
printf '[streamsvc]\ntcp-keepalive=5\n' >"$T/ka.conf"
refused streamsvc "$T/ka.conf:2: [streamsvc] tcp-keepalive: '5' is not 0 (off) or a number of seconds from 6 to 86400" \
  timeout 10 "$STREAMSVC" --config "$T/ka.conf"
printf '[streamsvc]\niscsi-nop-timeout=0\n' >"$T/nop.conf"
refused streamsvc "$T/nop.conf:2: [streamsvc] iscsi-nop-timeout: '0' is not an integer from 1 to 3600" \
  timeout 10 "$STREAMSVC" --config "$T/nop.conf"
refused streamsvc "--tcp-keepalive: '-1' is not 0 (off) or a number of seconds from 6 to 86400" \
  timeout 10 "$STREAMSVC" --config "$T/df.conf" --tcp-keepalive -1
refused streamsvc "--iscsi-nop-interval 3601: 0 (off) to 3600 seconds" \
  timeout 10 "$STREAMSVC" --config "$T/df.conf" --iscsi-nop-interval 3601
pass "unknown key/group, bad values, missing explicit file: one exact line, exit 1, nothing done"

# a missing default file is fine (when this host has none)
default=$("$STREAMSVC" --help | sed -n 's/.*\$DISKFARM_CONFIG, else \([^)]*\)).*/\1/p' | head -1)
[ -n "$default" ] || fail "streamsvc --help does not name the default diskfarm.conf"
if [ ! -e "$default" ]; then
  env -u DISKFARM_CONFIG "$DISKFARM" --json config show >"$T/j.json" || fail "missing default file refused"
  jcheck "$T/j.json" "all(k['source'] in ('default', None) for k in d)"
  pass "no $default: every program runs on the built-in defaults"
fi

# ---- console: [farm] dir, $DISKFARM_FARM and --farm over it ------------------
printf '[farm]\ndir=%s\n' "$T/cfarm" >"$T/console.conf"
# (without $DISKFARM_DB of a -pg run: a conf without database= is farm.db)
env -u DISKFARM_FARM -u DISKFARM_DB DISKFARM_CONFIG="$T/console.conf" "$DISKFARM" --json init >"$T/j.json" ||
  fail "init with [farm] dir"
jcheck "$T/j.json" "d['farm'] == '$T/cfarm'"
[ -f "$T/cfarm/farm.db" ] || fail "[farm] dir: no $T/cfarm/farm.db"
env -u DISKFARM_FARM -u DISKFARM_DB "$DISKFARM" --config "$T/console.conf" --json vdisk list >"$T/j.json"
jcheck "$T/j.json" "d == []"
DISKFARM_FARM=$FARM "$DISKFARM" --config "$T/console.conf" --json vdisk list >"$T/j.json"
jcheck "$T/j.json" "[v['name'] for v in d] == ['base']"
env DISKFARM_FARM="$T/cfarm" "$DISKFARM" --config "$T/console.conf" --farm "$FARM" --json vdisk list >"$T/j.json"
jcheck "$T/j.json" "[v['name'] for v in d] == ['base']"
[ "$("$DISKFARM" --config "$T/console.conf" config get farm.dir)" = "$T/cfarm" ] || fail "config get farm.dir"
pass "console: [farm] dir used; \$DISKFARM_FARM and --farm win over it; config get"

# ---- [farm] database: its password is never printed -------------------------
printf '[farm]\ndatabase=host=%s/nosock dbname=sitefarm password=s3cretpw\n' "$T" >"$T/secret.conf"
{
  env -u DISKFARM_DB DISKFARM_CONFIG="$T/secret.conf" "$DISKFARM" config show
  env -u DISKFARM_DB DISKFARM_CONFIG="$T/secret.conf" "$DISKFARM" --json config show
  env -u DISKFARM_DB DISKFARM_CONFIG="$T/secret.conf" "$DISKFARM" config get farm.database
  env -u DISKFARM_DB DISKFARM_CONFIG="$T/secret.conf" "$DISKFARM" vdisk list || true
  "$DISKFARM" --db "host=$T/nosock dbname=sitefarm password=s3cretpw" vdisk list || true
  "$STREAMSVC" --config "$T/secret.conf" --nbd-listen "unix:$T/secret.sock" --admin-listen none || true
} >"$T/secret.out" 2>&1
grep -q s3cretpw "$T/secret.out" && { cat "$T/secret.out"; fail "the farm DB password was printed"; }
grep -q "dbname=sitefarm" "$T/secret.out" || { cat "$T/secret.out"; fail "the farm DB is not named"; }
grep -q "cannot connect" "$T/secret.out" || { cat "$T/secret.out"; fail "no connection error"; }
pass "[farm] database / --db: config show, config get and errors name the DB without its password"

# ---- bootstrapsvc: address, ports, farm and proxydhcp from the file ----------
cat >"$T/bs.conf" <<EOF
[farm]
dir=$FARM
${DISKFARM_DB:+database=$DISKFARM_DB}
[bootstrapsvc]
address=127.0.0.2
http-port=0
tftp-port=0
dhcp-port=0
pxe-port=0
no-proxydhcp=true
user=$(id -un)
health-interval=300
EOF
start_streamsvc   # a healthy stream server in the farm, for the boot script
add_streamsvc_server ss1
BS_LOG=$T/bs.log
env -u DISKFARM_FARM "$BOOTSTRAPSVC" --config "$T/bs.conf" >"$BS_LOG" 2>&1 &
BS_PID=$!
_df_pids="$_df_pids $BS_PID"
wait_log ": ready" || { cat "$BS_LOG"; fail "bootstrapsvc did not start from diskfarm.conf"; }
grep -q "http listening on http://127.0.0.2:" "$BS_LOG" || { cat "$BS_LOG"; fail "[bootstrapsvc] address not used"; }
grep -q "proxydhcp listening" "$BS_LOG" && fail "no-proxydhcp=true ignored"
wait_log "stream server ss1 is now healthy" || { cat "$BS_LOG"; fail "ss1 never healthy"; }
port=$(sed -n 's|.*http listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$BS_LOG" | tail -1)
# its farm is [farm] dir: pc1 is known there and its script names pc1;
# fetched without a ProxyDHCP token (no-proxydhcp) it changes nothing
df device add pc1 --mac 52:54:00:00:00:71 --vdisk base >/dev/null
gen() { df --json device show pc1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }
g1=$(gen)
curl -sS "http://127.0.0.2:$port/boot.ipxe?mac=52:54:00:00:00:71" >"$T/boot.ipxe" || fail "boot script from the configured bootstrapsvc"
grep -q "iqn.2026-11.org.diskfarm:pc1" "$T/boot.ipxe" && [ "$(gen)" -eq "$g1" ] ||
  { cat "$T/boot.ipxe"; fail "boot script does not come from [farm] dir"; }
kill -TERM "$BS_PID"; wait "$BS_PID" || true
# --address wins over [bootstrapsvc] address
: >"$BS_LOG"
env -u DISKFARM_FARM "$BOOTSTRAPSVC" --config "$T/bs.conf" --address 127.0.0.1 >"$BS_LOG" 2>&1 &
BS_PID=$!
_df_pids="$_df_pids $BS_PID"
wait_log ": ready" || { cat "$BS_LOG"; fail "bootstrapsvc --address with diskfarm.conf"; }
grep -q "http listening on http://127.0.0.1:" "$BS_LOG" || { cat "$BS_LOG"; fail "--address did not win over the file"; }
kill -TERM "$BS_PID"; wait "$BS_PID" || true
pass "bootstrapsvc: address, ports, no-proxydhcp, user and [farm] dir from diskfarm.conf; --address wins"

# ---- bdm: [bdm] server and retries, --server over them -----------------------
printf '[bdm]\nserver=10.7.7.1;10.7.7.2:8080\nretries=2\n' >"$T/bdm.conf"
"$BDM" script - --config "$T/bdm.conf" >"$T/script" || fail "bdm script with [bdm] server"
grep -q "chain .*http://10.7.7.2:8080/boot.ipxe" "$T/script" || { cat "$T/script"; fail "[bdm] server not used"; }
[ "$(grep -c 'http://10.7.7.1/boot.ipxe' "$T/script")" -eq 2 ] || { cat "$T/script"; fail "[bdm] retries=2 not used"; }
"$BDM" script - --config "$T/bdm.conf" --server 10.7.7.9 >"$T/script" || fail "bdm --server with [bdm] server"
grep -q "10.7.7.9" "$T/script" && ! grep -q "10.7.7.1" "$T/script" || { cat "$T/script"; fail "--server did not replace [bdm] server"; }
pass "bdm: [bdm] server and retries from diskfarm.conf; --server replaces them"
