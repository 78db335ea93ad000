#!/bin/bash
# relay: `streamsvc --relay` between real NBD clients and two real stream
# servers of one farm (issue 13, tier 1).
#   1. --upstream A --upstream B, no read cache: nbdinfo/nbdcopy/qemu-img
#      through the relay see the vDisk as it is; an nbdsh reader kill -9s
#      the server the relay reads from halfway through a bounded read loop
#      and every read still returns the right data (the replay and the
#      stall, kill to next answered read, are printed);
#   2. the registry (no --upstream) and a read cache: 8 clients read one
#      boot working set at once; the servers' /metrics count the bytes the
#      relay fetched: about one working set, not 8 (ratio printed);
#   3. a writable export (cache mode server) is forwarded; when its server
#      dies its writes cannot be replayed elsewhere: EIO, not stale data.
. "$TESTS_SRCDIR/lib.sh"
need nbdinfo nbdcopy nbdsh qemu-img qemu-io curl python3

MB=24
df init >/dev/null
head -c $((MB * 1048576)) /dev/urandom >"$T/boot.raw"
df vdisk import boot "$T/boot.raw" --format raw >/dev/null
df device add pc01 --mac 52:54:00:00:13:01 --vdisk boot --cache server >/dev/null

# start_ss NAME: a stream server of the farm on loopback TCP, registered
# as NAME.  Sets PID_<NAME>, PORT_<NAME>, ADMIN_<NAME>.
start_ss() {
  local name=$1 log=$T/$1.log
  "$STREAMSVC" --farm "$FARM" --nbd-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --server-name "$name" \
    --server-address 127.0.0.1 --heartbeat-interval 200 \
    --heartbeat-timeout 600 >"$log" 2>&1 &
  local pid=$!
  _df_pids="$_df_pids $pid"
  for _ in $(seq 100); do
    grep -q "registry: registered" "$log" && break
    kill -0 $pid 2>/dev/null || { cat "$log"; fail "streamsvc $name exited"; }
    sleep 0.1
  done
  grep -q "registry: registered" "$log" || { cat "$log"; fail "$name did not register"; }
  local port admin
  port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://')
  admin=$(grep -o 'admin listening on http://[0-9.:]*' "$log" | head -1 | sed 's|.*http://||')
  eval "PID_$name=$pid PORT_$name=$port ADMIN_$name=$admin"
}

# start_relay LOG ARGS...: the relay on $T/relay.sock.  Sets RELAY_PID,
# RSOCK.
start_relay() {
  local log=$1; shift
  RSOCK=$T/relay.sock
  rm -f "$RSOCK"
  "$STREAMSVC" --relay --nbd-listen "unix:$RSOCK" "$@" >"$log" 2>&1 &
  RELAY_PID=$!
  _df_pids="$_df_pids $RELAY_PID"
  for _ in $(seq 100); do
    grep -q "relay nbd listening on unix:" "$log" && return 0
    kill -0 $RELAY_PID 2>/dev/null || { cat "$log"; fail "relay exited"; }
    sleep 0.1
  done
  cat "$log"; fail "relay did not start"
}
stop_relay() { kill -TERM "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null || true; }
ruri() { echo "nbd+unix:///$1?socket=$RSOCK"; }

# the server NAME of the port the relay's log last named for export $2
server_of() { # log export
  local port
  port=$(grep "relay: export $2: upstream 127.0.0.1:" "$1" | tail -1 | sed 's/.*://')
  for n in A B C; do
    eval "[ \"\${PORT_$n:-}\" = \"$port\" ]" && { echo "$n"; return 0; }
  done
  fail "no server with port '$port' in $1"
}

# bytes the servers A..C served for export $1 (their /metrics)
served() {
  local sum=0 n a v
  for n in "$@"; do
    eval "a=\$ADMIN_$n"
    v=$(curl -sf "http://$a/metrics" |
        awk -v e="$EXPORT" '$1 == "diskfarm_bytes_total{export=\"" e "\",direction=\"read\"}" { print $2 }')
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

start_ss A
start_ss B

# ---- 1. two fixed upstreams, failover ---------------------------------------
"$STREAMSVC" --relay --upstream nohost >"$T/bad.err" 2>&1 && fail "--upstream nohost accepted"
grep -q "HOST:PORT" "$T/bad.err" || fail "message: $(cat "$T/bad.err")"
"$STREAMSVC" --upstream 127.0.0.1:1 >"$T/bad.err" 2>&1 && fail "--upstream without --relay accepted"
grep -q "only with --relay" "$T/bad.err" || fail "message: $(cat "$T/bad.err")"
pass "bad relay options refused with one line"

start_relay "$T/relay1.log" --upstream "127.0.0.1:$PORT_A" \
  --upstream "127.0.0.1:$PORT_B" --relay-cache-size 0 --relay-stall 15 \
  --relay-timeout 3
nbdinfo --json "$(ruri vdisk/boot)" >"$T/info.json" || fail "nbdinfo through the relay"
jcheck "$T/info.json" "d['exports'][0]['export-size'] == $MB << 20" \
  "d['exports'][0]['is_read_only'] is True" \
  "' sha256:' in d['exports'][0]['description']"
nbdinfo "$(ruri vdisk/nosuch)" >"$T/no.out" 2>&1 && fail "an unknown export opened"
nbdcopy "$(ruri vdisk/boot)" "$T/copy.raw" || fail "nbdcopy through the relay"
cmp "$T/boot.raw" "$T/copy.raw" || fail "nbdcopy: data differs"
qemu-img compare -f raw -F raw "$(ruri vdisk/boot)" "$T/boot.raw" >/dev/null ||
  fail "qemu-img compare through the relay"
pass "nbdinfo, nbdcopy, qemu-img compare through the relay: the vDisk as it is"

# nbdsh reads the disk in 256 KiB blocks, checks each against the file,
# and kill -9s the server the relay reads from at the half (the port the
# relay's log names, mapped to its pid).
cat >"$T/failover.py" <<'PY'
import os, re, signal, sys, time
uri, raw, log, servers = (os.environ[k] for k in ("U", "RAW", "LOG", "SERVERS"))
pids = dict(x.split("=") for x in servers.split(","))
data = open(raw, "rb").read()
h.connect_uri(uri)
bs = 256 * 1024
n = len(data) // bs
stall = None
for i in range(n):
    if i == n // 2:
        ports = re.findall(r"relay: export vdisk/boot: upstream 127\.0\.0\.1:(\d+)",
                           open(log).read())
        victim = int(pids[ports[-1]])
        os.kill(victim, signal.SIGKILL)
        print("kill -9 of the server on port %s (pid %d) before block %d"
              % (ports[-1], victim, i))
        killed_at = time.monotonic()
    got = h.pread(bs, i * bs)
    if got != data[i * bs:(i + 1) * bs]:
        sys.exit("block %d differs" % i)
    if i == n // 2:
        stall = time.monotonic() - killed_at
print("%d blocks read, identical; stall after kill -9: %.2f s" % (n, stall))
h.shutdown()
PY
U=$(ruri vdisk/boot) RAW=$T/boot.raw LOG=$T/relay1.log \
  SERVERS="$PORT_A=$PID_A,$PORT_B=$PID_B" timeout 120 nbdsh -c - <"$T/failover.py" >"$T/failover.out" 2>&1 ||
  { cat "$T/failover.out"; cat "$T/relay1.log"; fail "reads through the relay across kill -9"; }
cat "$T/failover.out"
grep -q "identical" "$T/failover.out" || fail "failover output"
grep -q "lost" "$T/relay1.log" || { cat "$T/relay1.log"; fail "the relay did not see its upstream die"; }
grep -q "read at [0-9]* replayed on 127.0.0.1:" "$T/relay1.log" ||
  { cat "$T/relay1.log"; fail "no replayed read in the relay's log"; }
grep -o "replayed on .*" "$T/relay1.log" | head -1 | sed 's/^/  relay: /'
pass "kill -9 of the relay's server mid-run: reads went on on the other, data identical"
stop_relay
