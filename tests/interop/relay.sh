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
  wait_registered "$name" "$pid" "$log"
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
  wait_started "$RELAY_PID" "$log" "relay nbd listening on unix:" relay
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

# ---- 2. the registry, the read cache: 8 clients, one working set ------------
killed=A; kill -0 "$PID_A" 2>/dev/null && killed=B
start_ss "$killed" # back, on a new port: the registry says where
sleep 1            # the dead row's heartbeat is older than its timeout
EXPORT=vdisk/boot

# the working set a boot reads: the first 4 MiB in 128 KiB requests, then
# 48 scattered 64 KiB reads and 32 scattered 4 KiB ones (fixed seed)
cat >"$T/boot.py" <<'PY'
import os, random
data = open(os.environ["RAW"], "rb").read()
rng = random.Random(13)
reqs = [(o, 128 << 10) for o in range(0, 4 << 20, 128 << 10)]
reqs += [(rng.randrange(64, len(data) >> 16) << 16, 64 << 10) for _ in range(48)]
reqs += [(rng.randrange(1024, len(data) >> 12) << 12, 4096) for _ in range(32)]
total = 0
h.connect_uri(os.environ["U"])
for off, n in reqs:
    if h.pread(n, off) != data[off:off + n]:
        raise SystemExit("read at %d differs" % off)
    total += n
print(total)
h.shutdown()
PY

# storm LOG CACHE: 8 clients at once through a new relay on the registry;
# prints "<upstream bytes> <bytes one client read>"
storm() {
  local log=$1 cache=$2 before after one i
  start_relay "$log" --farm "$FARM" --relay-cache-size "$cache"
  before=$(served A B)
  for i in 1 2 3 4 5 6 7 8; do
    U=$(ruri vdisk/boot) RAW=$T/boot.raw timeout 120 nbdsh -c - \
      <"$T/boot.py" >"$T/client$i.out" 2>&1 &
    eval "cpid$i=$!"
  done
  for i in 1 2 3 4 5 6 7 8; do
    eval "wait \$cpid$i" || { cat "$T/client$i.out" "$log"; fail "client $i through the relay"; }
  done
  after=$(served A B)
  one=$(cat "$T/client1.out")
  stop_relay
  echo "$((after - before)) $one"
}
read -r up0 one0 < <(storm "$T/relay-nocache.log" 0)
read -r up1 one1 < <(storm "$T/relay-cache.log" 64M)
ratio0=$(python3 -c "print('%.2f' % ($up0 / $one0))")
ratio1=$(python3 -c "print('%.2f' % ($up1 / $one1))")
echo "  8 clients x $one1 bytes: upstream $up0 bytes without the read cache (${ratio0}x one working set), $up1 with it (${ratio1}x)"
grep "relay: client reads" "$T/relay-cache.log" | sed 's/.*notice: /  /'
python3 -c "import sys; sys.exit(0 if $up0 >= 7 * $one0 else 1)" ||
  fail "without the cache the servers served $up0 bytes, not 8 x $one0"
python3 -c "import sys; sys.exit(0 if $up1 <= 1.5 * $one1 else 1)" ||
  fail "with the cache the servers served $up1 bytes (${ratio1}x one working set)"
grep -q "relay: upstream the registry" "$T/relay-cache.log" || fail "the relay did not read the registry"
pass "read cache: 8 clients fetched one working set upstream once (${ratio1}x, ${ratio0}x without)"

# ---- 3. a writable export: forwarded; its server's death is EIO --------------
start_relay "$T/relay3.log" --farm "$FARM" --relay-timeout 2 --relay-stall 4
cat >"$T/write.py" <<'PY'
import os, re, signal, sys
pids = dict(x.split("=") for x in os.environ["SERVERS"].split(","))
h.connect_uri(os.environ["U"])
assert not h.is_read_only()
h.pwrite(b"\x5a" * 4096, 1 << 20)
h.flush()
assert h.pread(4096, 1 << 20) == b"\x5a" * 4096
ports = re.findall(r"relay: export device/pc01: upstream 127\.0\.0\.1:(\d+)",
                   open(os.environ["LOG"]).read())
os.kill(int(pids[ports[-1]]), signal.SIGKILL)
for what, op in (("write", lambda: h.pwrite(b"\x77" * 4096, 2 << 20)),
                 ("flush", h.flush), ("read", lambda: h.pread(4096, 1 << 20))):
    try:
        op()
        raise SystemExit("%s after its server died: no error" % what)
    except nbd.Error as e:
        print("%s after kill -9: %s" % (what, e.string))
PY
U=$(ruri device/pc01) LOG=$T/relay3.log \
  SERVERS="$PORT_A=$PID_A,$PORT_B=$PID_B" timeout 60 nbdsh -c - <"$T/write.py" \
  >"$T/write.out" 2>&1 || { cat "$T/write.out" "$T/relay3.log"; fail "writable export through the relay"; }
sed 's/^/  /' "$T/write.out"
grep -q "write after kill -9:.*Input/output error" "$T/write.out" || fail "write after the kill: $(cat "$T/write.out")"
grep -q "writable export, its unflushed writes were on that server: EIO" "$T/relay3.log" ||
  { cat "$T/relay3.log"; fail "no EIO line in the relay's log"; }
pass "writable export: writes forwarded; after its server's kill -9 every request is EIO"
