"""Socket helpers shared by the raw protocol clients of the interop tests
(flood.py, nbd-tls-client.py, iscsi-guess.py, iscsi-hold.py): imported
from the script's own folder."""
import struct


def recv_exact(s, n, timeout=None):
    """Exactly n bytes from s (timeout in seconds when given, else the
    socket's own); EOFError when the peer closes first."""
    if timeout is not None:
        s.settimeout(timeout)
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(b), n))
        b += chunk
    return b


def iscsi_login_pdu(flags, itt, keys, isid=b"\x80\x12\x34\x56\x00\x01"):
    """An immediate iSCSI Login Request (flags: T, C, CSG, NSG) carrying
    keys, a list of (key, value)."""
    data = b"".join(k.encode() + b"=" + v.encode() + b"\0" for k, v in keys)
    bhs = bytearray(48)
    bhs[0] = 0x43
    bhs[1] = flags
    bhs[5:8] = len(data).to_bytes(3, "big")
    bhs[8:14] = isid
    struct.pack_into(">I", bhs, 16, itt)
    return bytes(bhs) + data + b"\0" * ((-len(data)) % 4)


def iscsi_recv_pdu(s):
    """(bhs, data) of the next PDU (EOFError when the peer closes)."""
    bhs = recv_exact(s, 48)
    dlen = int.from_bytes(bhs[5:8], "big")
    return bhs, recv_exact(s, dlen + (-dlen) % 4)[:dlen]


def iscsi_login_answer(s):
    """(status class/detail as one number, keys) of a Login Response."""
    bhs, data = iscsi_recv_pdu(s)
    keys = dict(kv.split("=", 1) for kv in data.decode(errors="replace").split("\0") if "=" in kv)
    return (bhs[36] << 8) | bhs[37], keys
