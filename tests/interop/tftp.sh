#!/bin/bash
# TFTP interop: tftp-hpa's tftp and curl fetch byte-identical files from
# bootstrapsvc; our windowsize client negotiates windowsize, survives a lost
# block and block-number rollover; duplicate ACKs never double DATA
# (Sorcerer's Apprentice); every TFTP bad input of BAD-INPUTS.md is answered
# while another transfer goes on; a 50-client storm reads each file once; a
# flood of unacknowledged RRQs from one address leaves the others served.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bootstrap-lib.sh"
need curl tftp cmp
: "${TFTP_CLIENT:?TFTP_CLIENT not set}"

df init >/dev/null
B=$FARM/boot
cp /usr/lib/ipxe/undionly.kpxe "$B/" 2>/dev/null || head -c 70000 /dev/urandom >"$B/undionly.kpxe"
head -c 3000000 /dev/urandom >"$B/medium.bin"
# 40 MiB at blksize 512 = 81921 blocks: the block number wraps past 65535.
head -c $((40 * 1024 * 1024)) /dev/urandom >"$B/big.bin"
head -c 1024 /dev/urandom >"$B/exact.bin"            # multiple of 512
: >"$B/empty.bin"
mkdir -p "$B/sub/dir" && cp "$B/exact.bin" "$B/sub/dir/file.bin"
ln -s /etc/passwd "$B/escape"
mkfifo "$B/fifo"
start_bootstrapsvc -v
O=$T/out; mkdir -p "$O"
P=$TFTP_PORT

# tftp-hpa
for f in undionly.kpxe medium.bin exact.bin empty.bin sub/dir/file.bin; do
  rm -f "$O/x"
  (cd "$O" && tftp -m binary 127.0.0.1 "$P" -c get "$f" x) >"$T/tftp.out" 2>&1
  cmp "$B/$f" "$O/x" || { cat "$T/tftp.out"; fail "tftp-hpa get $f differs"; }
done
pass "tftp-hpa: 5 files byte-identical (incl. empty, exact multiple of 512, subdir)"
(cd "$O" && tftp -m binary 127.0.0.1 "$P" -c get '\sub\dir\file.bin' y) >/dev/null 2>&1
cmp "$B/sub/dir/file.bin" "$O/y" || fail "backslash path not served"
pass "tftp-hpa: Windows-style backslash path"

# curl with blksize
for bs in 512 1468 8192 65464; do
  curl -sS --tftp-blksize "$bs" "tftp://127.0.0.1:$P/medium.bin" -o "$O/c.$bs"
  cmp "$B/medium.bin" "$O/c.$bs" || fail "curl blksize $bs differs"
done
pass "curl: blksize 512, 1468, 8192, 65464 byte-identical"
curl -sS --tftp-no-options "tftp://127.0.0.1:$P/undionly.kpxe" -o "$O/c.noopt"
cmp "$B/undionly.kpxe" "$O/c.noopt" || fail "curl without options differs"
pass "curl: no options (no OACK) byte-identical"

# windowsize client
"$TFTP_CLIENT" get 127.0.0.1 "$P" medium.bin "$O/w16" --blksize 1468 --windowsize 16 --tsize | tee "$T/w16.out"
cmp "$B/medium.bin" "$O/w16" || fail "windowsize 16 differs"
grep -q "windowsize 16 tsize 3000000" "$T/w16.out" || fail "windowsize/tsize not negotiated"
pass "windowsize 16 + tsize negotiated, byte-identical"
"$TFTP_CLIENT" get 127.0.0.1 "$P" medium.bin "$O/wdrop" --blksize 1024 --windowsize 8 --drop 21 | tee "$T/wdrop.out"
cmp "$B/medium.bin" "$O/wdrop" || fail "windowsize with a lost block differs"
pass "windowsize 8 with a lost block: recovered, byte-identical"
# blksize 65464: two blocks exceed one UDP GSO send, windows go by sendmmsg.
"$TFTP_CLIENT" get 127.0.0.1 "$P" medium.bin "$O/wbig" --blksize 65464 --windowsize 4 >/dev/null
cmp "$B/medium.bin" "$O/wbig" || fail "windowsize 4 at blksize 65464 differs"
pass "windowsize 4 at blksize 65464 (sendmmsg windows), byte-identical"
"$TFTP_CLIENT" get 127.0.0.1 "$P" medium.bin "$O/ldrop" --drop 5 --timeout 1 >/dev/null
cmp "$B/medium.bin" "$O/ldrop" || fail "lock-step with a lost block differs"
pass "lock-step with a lost block: retransmitted on timeout"
"$TFTP_CLIENT" get 127.0.0.1 "$P" big.bin "$O/big" --windowsize 4 | tee "$T/big.out"
cmp "$B/big.bin" "$O/big" || fail "40 MiB at blksize 512 (block rollover) differs"
pass "block-number rollover past 65535 (81921 blocks), byte-identical"
"$TFTP_CLIENT" get 127.0.0.1 "$P" medium.bin "$O/dup" --dup-acks || fail "Sorcerer's Apprentice"
cmp "$B/medium.bin" "$O/dup" || fail "dup-ack transfer differs"
pass "duplicate ACKs: no DATA sent twice (Sorcerer's Apprentice)"

# bad inputs while a transfer runs
"$TFTP_CLIENT" badinput 127.0.0.1 "$P" medium.bin "$O/bad" | tee "$T/bad.out"
cmp "$B/medium.bin" "$O/bad" || fail "transfer during bad inputs differs"
grep -q FAIL "$T/bad.out" && fail "bad input answered wrongly"
curl -sS "tftp://127.0.0.1:$P/fifo" -o /dev/null 2>/dev/null && fail "a FIFO was served"
pass "every TFTP bad input answered, concurrent transfer intact; FIFO refused"

# storm: 50 concurrent clients (50 addresses, as 50 PXE clients have), one
# file read
storm=""
for i in $(seq 50); do
  curl -sS --max-time 60 --interface "127.0.1.$i" --tftp-blksize 1428 \
    "tftp://127.0.0.1:$P/undionly.kpxe" -o "$O/s.$i" &
  storm="$storm $!"
done
for p in $storm; do wait "$p" || fail "storm client failed"; done
for i in $(seq 50); do cmp -s "$B/undionly.kpxe" "$O/s.$i" || fail "storm client $i differs"; done
pass "50 concurrent clients byte-identical"

# flood (issue 14): 1,100 RRQs with timeout=255 from one host, never
# acknowledged, while a client on another address downloads: the option is
# not honoured above 5 s, one address gets 8 slots, the rest is refused at
# once (one log line a second), the other client is served.
curl -sS --max-time 60 --interface 127.0.2.1 --tftp-blksize 512 \
  "tftp://127.0.0.1:$P/medium.bin" -o "$O/during-flood" &
DURING=$!
python3 - "$P" <<'PY' | tee "$T/flood.out"
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    socks.append(s)
rrq = b"\0\1medium.bin\0octet\0timeout\x00255\x00blksize\x001024\x00"
for i in range(1100):
    socks[i % 100].sendto(rrq, ("127.0.0.1", port))
    if i % 20 == 19:
        time.sleep(0.01)          # no loss in the socket buffers
started = set()                 # transfer ports that sent OACK or DATA
refused = other = blksize_acked = 0
timeout_acked = False
deadline = time.time() + 3
while time.time() < deadline:
    got = False
    for s in socks:
        try:
            d, src = s.recvfrom(2048)
        except BlockingIOError:
            continue
        got = True
        if d[:2] in (b"\0\6", b"\0\3"):
            started.add(src)
            timeout_acked |= d[:2] == b"\0\6" and b"timeout" in d
            blksize_acked += d == b"\0\6blksize\x001024\x00"
        elif d[:2] == b"\0\5" and b"too many transfers" in d:
            refused += 1
        elif d[:2] != b"\0\3":
            other += 1
    if not got:
        time.sleep(0.02)
print("started %d refused %d other %d timeout-acked %s blksize-acked %d" % (len(started), refused, other, timeout_acked, blksize_acked))
ok = len(started) == 8 and refused >= 1000 and not timeout_acked and blksize_acked >= 8
# A timeout the server honours (<= 5 s) is acknowledged as asked.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.3.1", 0))
s.settimeout(2)
s.sendto(b"\0\1exact.bin\0octet\0timeout\x003\x00", ("127.0.0.1", port))
d, _ = s.recvfrom(2048)
print("timeout 3: %r" % d)
ok = ok and d == b"\0\6timeout\x003\x00"
s.sendto(b"\0\5\0\0done\0", _)
sys.exit(0 if ok else 1)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "flood from one address: 8 slots, the rest refused, timeout=255 not honoured"
wait "$DURING" || fail "a client on another address failed during the flood"
cmp "$B/medium.bin" "$O/during-flood" || fail "download during the flood differs"
curl -sS --max-time 20 --interface 127.0.2.2 "tftp://127.0.0.1:$P/exact.bin" -o "$O/after-flood" ||
  fail "a new client on another address was refused while the flood's slots are held"
cmp "$B/exact.bin" "$O/after-flood" || fail "download after the flood differs"
n=$(grep -c "transfers from this address already" "$BS_LOG" || true)
[ "$n" -ge 1 ] && [ "$n" -le 5 ] || fail "per-source refusals logged $n times (want 1-5: one a second)"
pass "flood of 1,100 timeout=255 RRQs from one address: 8 slots, refused at once, others served"

kill -TERM "$BS_PID"; wait "$BS_PID" 2>/dev/null || true
grep "cache" "$BS_LOG" | tail -1
files_read=$(sed -n 's/.*cache [0-9]* hits, \([0-9]*\) files read.*/\1/p' "$BS_LOG" | tail -1)
# 6 distinct files were fetched (undionly, medium, exact, empty,
# sub/dir/file, big) by 60+ transfers: each must have been read once.
[ "$files_read" = 6 ] || fail "cache read files $files_read times for 6 distinct files"
pass "hot files read once into the cache ($files_read files read for all transfers)"
