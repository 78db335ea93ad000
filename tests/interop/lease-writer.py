#!/usr/bin/python3
# Numbered 4 KiB records with a FLUSH each, to device/p over NBD, failing
# over from one streamsvc socket to the next when a request fails (issue
# 13 tier 2).  Each acknowledged record is logged "N unix-time SOCKINDEX"
# to ACKS; record N holds N (8 bytes little-endian) repeated, at block
# N mod the export's block count: a fast writer laps the disk rather than
# run off its end (a write past the end is not a server failure).
#   lease-writer.py ACKS COUNT SOCK [SOCK...]
# Exits 0 when COUNT records were acknowledged, 1 when it could not
# reconnect within 30 s or a write was refused for want of space.  With
# COUNT 0 it writes until the file STOP (ACKS.stop) appears.
import errno, nbd, os, sys, time

acks, count, socks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
stop = acks + ".stop"
BS = 4096

def connect(i):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        h = nbd.NBD()
        try:
            h.connect_uri("nbd+unix:///device/p?socket=" + socks[i % len(socks)])
            return h, i % len(socks)
        except nbd.Error as e:
            print("lease-writer: connect %s: %s" % (socks[i % len(socks)], e),
                  file=sys.stderr)
            i += 1
            time.sleep(0.1)
    sys.exit("lease-writer: no server took device/p within 30 s")

def record(n):
    return n.to_bytes(8, "little") * (BS // 8)

n = 0
h, i = connect(0)
blocks = h.get_size() // BS
with open(acks, "w") as log:
    while (n < count) if count else not os.path.exists(stop):
        try:
            h.pwrite(record(n), (n % blocks) * BS)
            h.flush()
        except nbd.Error as e:
            if e.errnum in (errno.ENOSPC, errno.EDQUOT):
                sys.exit("lease-writer: record %d: %s: not a server failure"
                         % (n, e))
            print("lease-writer: record %d: %s; failing over" % (n, e),
                  file=sys.stderr)
            h, i = connect(i + 1)
            continue
        log.write("%d %.6f %d\n" % (n, time.time(), i))
        log.flush()
        n += 1
