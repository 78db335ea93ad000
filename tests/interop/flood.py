#!/usr/bin/env python3
"""Raw-socket floods for tests/interop/limits.sh (bounded in count and time).

  flood.py hold SRC HOST PORT N SECONDS [--trickle]
      open N TCP connections from address SRC, send nothing (or, with
      --trickle, one byte of an NBD handshake every 0.5 s); print
      "greeted G closed-at-once R closed-later L open O" after SECONDS
  flood.py nbd-session SRC HOST PORT EXPORT
      full NBD handshake (fixed newstyle, OPT_GO), one READ of 512 bytes;
      prints "ok" (exit 1 on any failure)
  flood.py nbd-partial SRC HOST PORT EXPORT N SECONDS
      N sessions each send 10 bytes of a request header and stall; prints
      "closed C of N after SECONDS"
  flood.py nbd-bigwrite SRC HOST PORT EXPORT N HOLD
      N sessions each send a 32 MiB WRITE header and all but the last
      4 KiB of its payload, then hold HOLD seconds (the caller measures
      streamsvc's memory meanwhile: "ready" is printed when all is sent);
      then each sends the rest and a READ; prints "replies: E errors,
      R reads ok" (the WRITE error reply and the READ prove the stream
      stayed in step)
  flood.py stall SRCS HOST PORT N HOLD
      N NBD connections from the comma-separated addresses SRCS (round
      robin), each sends one byte of its client flags after the greeting;
      prints "ready" once all are sent, holds HOLD seconds, prints "held"
  flood.py iscsi-partial SRC HOST PORT TARGET N SECONDS
      N iSCSI logins (operational stage, no CHAP) to TARGET, then 20 bytes
      of a BHS each; prints "closed C of N after SECONDS"
"""
import socket
import struct
import sys
import time

import sockutil

NBD_OPTS_MAGIC = 0x49484156454F5054
NBD_REP_MAGIC = 0x0003E889045565A9
NBD_REQUEST_MAGIC = 0x25609513


def connect(src, host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect((host, port))
    return s


def recv_exact(s, n, timeout=10):
    return sockutil.recv_exact(s, n, timeout)


def closed_now(s, timeout):
    """True if the peer closed (EOF or reset) within timeout; greeting
    bytes are read and ignored."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(4096):
                return True
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def nbd_go(s, export):
    g = recv_exact(s, 18)
    assert g[:8] == b"NBDMAGIC", g
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    name = export.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", NBD_OPTS_MAGIC, 7, len(data)) + data)
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == NBD_REP_MAGIC
        body = recv_exact(s, ln) if ln else b""
        if typ == 1:  # ACK
            return
        if typ & 0x80000000:
            raise RuntimeError("NBD_OPT_GO refused: %r" % body)


def nbd_read(s, cookie, count=512):
    s.sendall(struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, 0, cookie, 0, count))
    magic, err, ck = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == 0x67446698 and ck == cookie, (magic, ck)
    if err == 0:
        recv_exact(s, count)
    return err


def cmd_hold(src, host, port, n, seconds, trickle=False):
    socks, at_once, greeted = [], 0, 0
    for _ in range(n):
        try:
            socks.append(connect(src, host, port))
        except OSError:
            at_once += 1
    alive = []
    time.sleep(0.3)
    for s in socks:
        s.setblocking(False)
        try:
            b = s.recv(64)
            if b:
                greeted += 1
                alive.append(s)
            else:
                at_once += 1
        except BlockingIOError:
            alive.append(s)  # iSCSI says nothing first
        except OSError:
            at_once += 1
    end = time.monotonic() + seconds
    later = 0
    flags = struct.pack(">I", 3)
    step = 0
    while time.monotonic() < end and alive:
        time.sleep(0.5)
        still = []
        for s in alive:
            try:
                if trickle:
                    s.send(flags[step % 4:step % 4 + 1])
                s.setblocking(False)
                try:
                    if s.recv(64) == b"":
                        later += 1
                        continue
                except BlockingIOError:
                    pass
                still.append(s)
            except OSError:
                later += 1
        step += 1
        alive = still
    print("greeted %d closed-at-once %d closed-later %d open %d"
          % (greeted, at_once, later, len(alive)))


def cmd_nbd_session(src, host, port, export):
    s = connect(src, host, port)
    nbd_go(s, export)
    err = nbd_read(s, 1)
    if err:
        sys.exit("READ failed: error %d" % err)
    print("ok")


def cmd_nbd_partial(src, host, port, export, n, seconds):
    socks = []
    for _ in range(n):
        s = connect(src, host, port)
        nbd_go(s, export)
        s.sendall(struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, 0, 7, 0, 512)[:10])
        socks.append(s)
    end = time.monotonic() + seconds
    closed = 0
    for s in socks:
        if closed_now(s, max(0.05, end - time.monotonic())):
            closed += 1
    print("closed %d of %d after %s" % (closed, n, seconds))


def cmd_nbd_bigwrite(src, host, port, export, n, hold):
    count = 32 * 1024 * 1024
    rest = 4096
    payload = b"\x5a" * (1024 * 1024)
    socks = []
    for i in range(n):
        s = connect(src, host, port)
        nbd_go(s, export)
        s.sendall(struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, 1, 100 + i, 0,
                              count))
        left = count - rest
        while left > 0:
            k = min(left, len(payload))
            s.sendall(payload[:k])
            left -= k
        socks.append(s)
    print("ready", flush=True)
    time.sleep(hold)
    errors = reads = 0
    for i, s in enumerate(socks):
        s.sendall(b"\x5a" * rest)
        magic, err, ck = struct.unpack(">IIQ", recv_exact(s, 16))
        assert magic == 0x67446698 and ck == 100 + i, (magic, ck)
        if err:
            errors += 1
        if nbd_read(s, 200 + i) == 0:
            reads += 1
    print("replies: %d errors, %d reads ok" % (errors, reads))


def cmd_stall(srcs, host, port, n, hold):
    socks = []
    for i in range(n):
        s = connect(srcs[i % len(srcs)], host, port)
        recv_exact(s, 18)
        s.sendall(b"\0")
        socks.append(s)
    print("ready", flush=True)
    time.sleep(hold)
    print("held", flush=True)


def iscsi_login(s, target, isid):
    text = ("InitiatorName=iqn.2026-12.org.diskfarm:flood\0"
            "TargetName=%s\0SessionType=Normal\0"
            "HeaderDigest=None\0DataDigest=None\0" % target).encode()
    pad = (-len(text)) % 4
    bhs = bytearray(48)
    bhs[0] = 0x43  # Login Request, immediate
    bhs[1] = 0x80 | (1 << 2) | 3  # T, CSG operational, NSG full feature
    bhs[5:8] = len(text).to_bytes(3, "big")
    bhs[8:14] = isid
    struct.pack_into(">IHHII", bhs, 16, 1, 0, 0, 1, 0)  # ITT CID rsvd CmdSN ExpStatSN
    s.sendall(bytes(bhs) + text + b"\0" * pad)
    rsp = recv_exact(s, 48)
    dlen = int.from_bytes(rsp[5:8], "big")
    recv_exact(s, dlen + (-dlen) % 4)
    if rsp[0] & 0x3F != 0x23 or rsp[36] != 0:
        raise RuntimeError("login refused: class %d detail %d" % (rsp[36], rsp[37]))


def cmd_iscsi_partial(src, host, port, target, n, seconds):
    socks = []
    for i in range(n):
        s = connect(src, host, port)
        iscsi_login(s, target, bytes([0x80, 0, 0, 0, 0x10, i]))
        s.sendall(b"\x00" * 20)  # a NOP-Out BHS begun, never finished
        socks.append(s)
    end = time.monotonic() + seconds
    closed = 0
    for s in socks:
        s.setblocking(True)
        if closed_now(s, max(0.05, end - time.monotonic())):
            closed += 1
    print("closed %d of %d after %s" % (closed, n, seconds))


def main(a):
    cmd = a[0]
    if cmd == "hold":
        cmd_hold(a[1], a[2], int(a[3]), int(a[4]), float(a[5]),
                 "--trickle" in a)
    elif cmd == "nbd-session":
        cmd_nbd_session(a[1], a[2], int(a[3]), a[4])
    elif cmd == "nbd-partial":
        cmd_nbd_partial(a[1], a[2], int(a[3]), a[4], int(a[5]), float(a[6]))
    elif cmd == "nbd-bigwrite":
        cmd_nbd_bigwrite(a[1], a[2], int(a[3]), a[4], int(a[5]), float(a[6]))
    elif cmd == "stall":
        cmd_stall(a[1].split(","), a[2], int(a[3]), int(a[4]), float(a[5]))
    elif cmd == "iscsi-partial":
        cmd_iscsi_partial(a[1], a[2], int(a[3]), a[4], int(a[5]), float(a[6]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
