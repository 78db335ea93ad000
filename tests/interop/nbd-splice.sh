#!/bin/bash
# Large NBD reads go from the chain's version files to the socket without
# copying (sendfile); what the clients get must be the bytes of the chain:
# across many runs and layers, through a write cache holding some blocks,
# over TCP and UNIX, structured and simple replies, and when a write to
# the same blocks follows the read on the same connection before its
# reply is out.
. "$TESTS_SRCDIR/lib.sh"
need qemu-img qemu-io nbdcopy nbdsh

mib=24
head -c "${mib}M" /dev/urandom >"$T/disk.raw"
df init >/dev/null
df vdisk import chain "$T/disk.raw" >/dev/null
df device add mnt --mac 52:54:00:00:00:02 --vdisk chain --type maintenance >/dev/null
df device add pcc --mac 52:54:00:00:00:0c --vdisk chain --type test --cache server >/dev/null
start_streamsvc --nbd-listen 127.0.0.1:0
port=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | tail -1 | sed 's/.*://')
[ -n "$port" ] || fail "no TCP listener in the log"
tcp() { echo "nbd://127.0.0.1:$port/$1"; }

# versions 1..6: 1 MiB runs, odd-sized pieces and 4 KiB pieces over the
# disk, each sealed, so the top reads from every layer
for v in $(seq 1 6); do
  df version new chain >/dev/null
  cmds=()
  for k in 0 1 2; do
    cmds+=(-c "write -P $((v * 16 + k)) $(( (v * 5 + k * 7) % (mib - 2) ))M 1M")
    cmds+=(-c "write -P $((v + 100)) $(( ((v * 7919 + k * 131) % (mib * 256)) * 4096 )) 4k")
    cmds+=(-c "write -P $((v + 200)) $(( ((v * 104729 + k * 977) % (mib * 256)) * 4096 + 512 )) 70000")
  done
  # the previous version's session and seal may still be closing on the
  # server: its maintenance export refuses a second opener meanwhile
  for try in $(seq 50); do
    qemu-io -f raw "${cmds[@]}" -c flush "$(uri device/mnt)" >/dev/null 2>"$T/qio.err" && break
    grep -q 'already open' "$T/qio.err" || { cat "$T/qio.err"; fail "qemu-io on device/mnt"; }
    [ "$try" -lt 50 ] || fail "device/mnt still open after 5 s"
    sleep 0.1
  done
  for _ in $(seq 100); do
    grep -q "session closed: export device/mnt .* version $v " "$T/streamsvc.log" && break
    sleep 0.1
  done
  df version seal chain >/dev/null
done
top=$(ls "$FARM"/store/chain/chain.*.qcow2 | sort -t. -k2 -n | tail -1)
qemu-img convert -f qcow2 -O raw "$top" "$T/ref.raw"
cmp -s "$T/ref.raw" "$T/disk.raw" && fail "the versions changed nothing"
layers=$(qemu-img info --backing-chain "$top" | grep -c '^image:')
[ "$layers" -ge 7 ] || fail "chain has $layers layers, expected 7"

# nbdcopy (structured replies, 256 KiB requests in parallel) over both
for u in "$(tcp vdisk/chain@6)" "$(uri vdisk/chain@6)"; do
  nbdcopy "$u" "$T/copy.raw"
  cmp "$T/ref.raw" "$T/copy.raw" || fail "nbdcopy $u differs from the chain"
  rm -f "$T/copy.raw"
done
pass "nbdcopy of a $layers-layer chain over TCP and UNIX = qemu-img convert"

# simple replies, reads of odd sizes and offsets (run edges inside reads)
URI="$(tcp vdisk/chain@6)" REF=$T/ref.raw nbdsh -c '
import os, random
h.set_request_structured_replies(False)
h.connect_uri(os.environ["URI"])
assert not h.get_structured_replies_negotiated()
ref = open(os.environ["REF"], "rb").read()
rnd = random.Random(7)
size = h.get_size()
for i in range(200):
    n = rnd.choice([4096, 40000, 65536, 300000, 1 << 20, 3 << 20])
    off = rnd.randrange(0, size - n)
    assert h.pread(n, off) == ref[off:off + n], (i, n, off)
' 2>&1 || fail "simple-reply reads differ"
pass "200 simple-reply reads of 4 KiB..3 MiB = the chain"

# a device over the chain: some blocks in its write cache, the rest from
# the chain; the same writes on a copy of the reference
qemu-io -f raw -c 'write -P 0x5a 1000 300000' -c 'write -P 0x11 5M 1M' \
  -c 'write -z 9M 64k' -c flush "$(tcp device/pcc)" >/dev/null
cp "$T/ref.raw" "$T/dev.raw"
qemu-io -f raw -c 'write -P 0x5a 1000 300000' -c 'write -P 0x11 5M 1M' \
  -c 'write -z 9M 64k' "$T/dev.raw" >/dev/null
nbdcopy "$(tcp device/pcc)" "$T/copy.raw"
cmp "$T/dev.raw" "$T/copy.raw" || fail "nbdcopy of the device differs"
pass "nbdcopy of a device (write cache over the chain) = reference"

# read then write of the same blocks, queued together on one connection:
# the read's reply (sent from the files after the write was run) holds
# what was there before the write, for blocks of the chain and of the
# cache alike; a read after the write sees the write
URI="$(tcp device/pcc)" REF=$T/dev.raw nbdsh -c '
import os
h.connect_uri(os.environ["URI"])
ref = open(os.environ["REF"], "rb").read()
n = 2 << 20
for rnd, off in enumerate([12 << 20, 4 << 20, 0]):
    want = ref[off:off + n]
    pat = bytes([0xa0 + rnd]) * n
    bufs = [nbd.Buffer(n) for _ in range(4)]
    cookies = []
    for b in bufs:
        cookies.append(h.aio_pread(b, off))
        cookies.append(h.aio_pwrite(pat, off))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    assert bufs[0].to_bytearray() == want, ("read before the writes", off)
    for b in bufs[1:]:
        assert b.to_bytearray() == pat, ("read after a write", off)
    assert h.pread(n, off) == pat
    prev = bytearray(ref)
    prev[off:off + n] = pat
    ref = bytes(prev)
' 2>&1 || fail "read/write ordering on one connection"
pass "a read queued before a write of the same blocks keeps the old data"

# The same with the client slow to take the reply: a raw client with a
# small receive buffer sends an 8 MiB READ and a WRITE of its last 4 KiB
# (already in the cache) together and reads only later, so the server
# runs the WRITE (once less than its output high water is queued) while
# the READ's tail still waits to be sent: that tail must be the old data.
python3 - "$(echo "$SOCK")" <<'PY' || fail "slow reader saw a later write"
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
s.connect(sys.argv[1])
def recv(n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        assert c, "server closed"
        b += c
    return bytes(b)
assert recv(18)[:16] == b"NBDMAGICIHAVEOPT"
name = b"device/pcc"
s.sendall(struct.pack(">I", 3) + b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)
recv(10)
def req(cmd, cookie, off, n, data=b""):
    return struct.pack(">IHHQQI", 0x25609513, 0, cmd, cookie, off, n) + data
def reply(cookie, n):
    magic, err, ck = struct.unpack(">IIQ", recv(16))
    assert (magic, err, ck) == (0x67446698, 0, cookie), (magic, err, ck)
    return recv(n)
n, off = 8 << 20, 14 << 20
tail = off + n - 4096
s.sendall(req(1, 1, tail, 4096, b"A" * 4096)); reply(1, 0)
s.sendall(req(0, 2, off, n) + req(1, 3, tail, 4096, b"B" * 4096))
time.sleep(1)
got = reply(2, n)
reply(3, 0)
s.sendall(req(0, 4, tail, 4096))
assert reply(4, 4096) == b"B" * 4096, "the write was lost"
assert got[-4096:] == b"A" * 4096, "the read reply holds the later write"
PY
pass "a slow reader's reply keeps the data of the time of its read"
