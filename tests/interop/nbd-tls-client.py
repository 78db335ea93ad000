#!/usr/bin/python3
"""A raw NBD client for nbd-tls.sh: the option replies of the NBD spec's
TLS rules, byte for byte, over a unix socket, with Python's ssl (x509).

  nbd-tls-client.py require-plain SOCK
  nbd-tls-client.py tls SOCK CLIENTDIR          (CN=pc01 certificate)
  nbd-tls-client.py anon SOCK CLIENTDIR         (TLS without a certificate)
  nbd-tls-client.py badcert SOCK CLIENTDIR      (exit 1: refused, as it must)
  nbd-tls-client.py discard SOCK CLIENTDIR      (server in --tls=on)

CLIENTDIR holds ca-cert.pem, client-cert.pem, client-key.pem.  Exit 0 when
every check holds; a failed check exits 1 naming it."""
import socket
import ssl
import struct
import sys

from sockutil import recv_exact

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003E889045565A9
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_SET_META = 6, 7, 8, 10
REP_ACK, REP_INFO = 1, 3
ERR = 1 << 31
ERR_POLICY, ERR_INVALID, ERR_TLS_REQD, ERR_UNKNOWN = ERR + 2, ERR + 3, ERR + 5, ERR + 6
NAMES = {REP_ACK: "ACK", REP_INFO: "INFO", ERR + 1: "ERR_UNSUP",
         ERR_POLICY: "ERR_POLICY", ERR_INVALID: "ERR_INVALID",
         ERR_TLS_REQD: "ERR_TLS_REQD", ERR_UNKNOWN: "ERR_UNKNOWN"}


def check(ok, what):
    if not ok:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    magic, opts, _flags = struct.unpack(">QQH", recv_exact(s, 18))
    check(magic == NBDMAGIC and opts == IHAVEOPT, "fixed newstyle greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s


def opt_bytes(opt, data=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def reply(s, opt):
    magic, ropt, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != REPMAGIC or ropt != opt:
        sys.exit("FAIL: bad reply header to option %d" % opt)
    return rtype, recv_exact(s, rlen)


def final_reply(s, opt, data=b""):
    """Send opt, skip INFO/SERVER/META replies; (type, message) of the last."""
    s.sendall(opt_bytes(opt, data))
    while True:
        rtype, payload = reply(s, opt)
        if rtype == REP_ACK or rtype & ERR:
            return rtype, payload.decode(errors="replace")


def info_data(name):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", 0)


def expect(s, opt, data, want, what):
    rtype, msg = final_reply(s, opt, data)
    check(rtype == want, "%s -> %s (got %s: %s)" % (what, NAMES[want],
                                                    NAMES.get(rtype, hex(rtype)), msg))
    return msg


def starttls(s, clientdir, with_cert=True):
    expect(s, OPT_STARTTLS, b"", REP_ACK, "NBD_OPT_STARTTLS")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(clientdir + "/ca-cert.pem")
    if with_cert:
        ctx.load_cert_chain(clientdir + "/client-cert.pem", clientdir + "/client-key.pem")
    return ctx.wrap_socket(s, server_hostname="localhost")


def require_plain(path):
    s = connect(path)
    for opt, data, what in ((OPT_LIST, b"", "NBD_OPT_LIST"),
                            (OPT_INFO, info_data("vdisk/golden"), "NBD_OPT_INFO vdisk/golden"),
                            (OPT_GO, info_data("device/pc01"), "NBD_OPT_GO device/pc01"),
                            (OPT_STRUCTURED, b"", "NBD_OPT_STRUCTURED_REPLY"),
                            (OPT_SET_META, b"\0" * 8, "NBD_OPT_SET_META_CONTEXT"),
                            (99, b"", "an unknown option")):
        expect(s, opt, data, ERR_TLS_REQD, "plaintext " + what)
    expect(s, OPT_STARTTLS, b"x", ERR_INVALID, "NBD_OPT_STARTTLS with data")
    expect(s, OPT_ABORT, b"", REP_ACK, "plaintext NBD_OPT_ABORT")
    s.close()
    s = connect(path)
    s.sendall(opt_bytes(OPT_EXPORT_NAME, b"vdisk/golden"))
    check(s.recv(1) == b"", "plaintext NBD_OPT_EXPORT_NAME closes the connection")


def read_block(s, offset, length):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, offset, length))
    magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    check(magic == 0x67446698 and error == 0 and cookie == 7, "simple read reply")
    return recv_exact(s, length)


def tls(path, clientdir):
    s = starttls(connect(path), clientdir)
    expect(s, OPT_INFO, info_data("device/pc01"), REP_ACK, "TLS CN=pc01: INFO device/pc01")
    expect(s, OPT_INFO, info_data("device/52:54:00:00:00:01"), REP_ACK,
           "TLS CN=pc01: INFO device/<pc01's MAC>")
    expect(s, OPT_INFO, info_data("vdisk/golden"), REP_ACK, "TLS CN=pc01: INFO vdisk/golden")
    expect(s, OPT_INFO, info_data("vdisk/nosuch"), ERR_UNKNOWN, "TLS: INFO vdisk/nosuch")
    # refusals must not tell which names exist: same type, same words
    msgs = {}
    for name in ("device/pc02", "device/nosuch", "device/52:54:00:00:00:02",
                 "device/52:54:00:99:99:99", "nosuch"):
        for opt in (OPT_INFO, OPT_GO):
            msg = expect(s, opt, info_data(name), ERR_POLICY, "TLS CN=pc01: option %d %s" % (opt, name))
            msgs[(opt, name)] = msg.replace(name, "NAME")
    check(len(set(msgs.values())) == 1, "one refusal text for existing and unknown names: %s" % set(msgs.values()))
    expect(s, OPT_STARTTLS, b"", ERR_INVALID, "NBD_OPT_STARTTLS inside TLS")
    expect(s, OPT_LIST, b"", REP_ACK, "NBD_OPT_LIST over TLS")
    expect(s, OPT_GO, info_data("vdisk/golden"), REP_ACK, "NBD_OPT_GO vdisk/golden over TLS")
    check(read_block(s, 512, 13) == b"DISKFARM-BASE", "read through TLS")
    s.close()


def anon(path, clientdir):
    s = starttls(connect(path), clientdir, with_cert=False)
    expect(s, OPT_INFO, info_data("device/pc01"), ERR_POLICY, "TLS without identity: device/pc01")
    expect(s, OPT_INFO, info_data("vdisk/golden"), REP_ACK, "TLS without identity: vdisk/golden")
    s.close()


def badcert(path, clientdir):
    """A client certificate the server's CA did not sign: the handshake
    must fail (exit 1 with the client's error)."""
    try:
        s = starttls(connect(path), clientdir)
        final_reply(s, OPT_INFO, info_data("vdisk/golden"))
    except (ssl.SSLError, OSError, EOFError) as e:
        sys.exit("TLS refused as it should: %s" % e)
    print("FAIL: TLS with a certificate of another CA worked")


def discard(path, clientdir):
    s = connect(path)
    expect(s, OPT_STRUCTURED, b"", REP_ACK, "plaintext NBD_OPT_STRUCTURED_REPLY (tls=on)")
    # STARTTLS with an ABORT behind it in the same segment: the ABORT is
    # plaintext and must never be read as if it came through TLS
    s.sendall(opt_bytes(OPT_STARTTLS) + opt_bytes(OPT_ABORT))
    rtype, _ = reply(s, OPT_STARTTLS)
    check(rtype == REP_ACK, "pipelined NBD_OPT_STARTTLS acknowledged")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(clientdir + "/ca-cert.pem")
    ctx.load_cert_chain(clientdir + "/client-cert.pem", clientdir + "/client-key.pem")
    s = ctx.wrap_socket(s, server_hostname="localhost")
    # structured replies were negotiated before TLS: forgotten now
    meta = info_data("vdisk/golden")[:-2] + struct.pack(">I", 0)
    expect(s, OPT_SET_META, meta, ERR_INVALID,
           "SET_META_CONTEXT after STARTTLS: structured replies forgotten")
    expect(s, OPT_INFO, info_data("vdisk/golden"), REP_ACK,
           "the plaintext ABORT was discarded: the session goes on over TLS")
    s.close()


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "require-plain":
        require_plain(path)
    elif mode == "tls":
        tls(path, sys.argv[3])
    elif mode == "anon":
        anon(path, sys.argv[3])
    elif mode == "badcert":
        badcert(path, sys.argv[3])
    elif mode == "discard":
        discard(path, sys.argv[3])
    else:
        sys.exit("unknown mode " + mode)


main()
