#!/usr/bin/python3
"""Crafted DHCP packets against bootstrapsvc's ProxyDHCP (tests/interop/dhcp.sh).

usage: dhcp-client.py HOST DHCP_PORT PXE_PORT EXPECT_ADDRESS [--expect-silence]
       dhcp-client.py url HOST DHCP_PORT MAC

Sends PXE DISCOVERs/REQUESTs for each client kind and every DHCP bad input of
shared/BAD-INPUTS.md, and checks the offers (type, siaddr, file, options 43,
54, 60, 97) or the silence.  Prints one line per case, exits 1 on any failure.
With --expect-silence every valid request must go unanswered (unhealthy).
"""
import os
import re
import socket
import struct
import sys


def url_mode(argv):
    """dhcp-client.py url HOST DHCP_PORT MAC: one iPXE DISCOVER for MAC (as
    iPXE sends it: user class "iPXE"); prints the boot file name of the
    ProxyDHCP offer (the script URL with its one-time token)."""
    host, port, mac = argv[2], int(argv[3]), bytes.fromhex(argv[4].replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    hdr = struct.pack("!BBBBIHH", 1, 1, 6, 0, xid, 0, 0x8000) + b"\0" * 16
    hdr += mac.ljust(16, b"\0") + b"\0" * 192 + bytes([99, 130, 83, 99])
    pkt = hdr + bytes([53, 1, 1]) + bytes([60, 9]) + b"PXEClient" + bytes([77, 4]) + b"iPXE" + b"\xff"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    s.sendto(pkt, (host, port))
    data, _ = s.recvfrom(4096)
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        if data[i] == 67:
            print(data[i + 2:i + 2 + data[i + 1]].decode())
            return 0
        i += 2 + data[i + 1]
    print("no option 67 in the answer", file=sys.stderr)
    return 1


if len(sys.argv) > 1 and sys.argv[1] == "url":
    sys.exit(url_mode(sys.argv))
HOST, DHCP_PORT, PXE_PORT, ADDR = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
EXPECT_SILENCE = "--expect-silence" in sys.argv
COOKIE = bytes([99, 130, 83, 99])
UUID = bytes([0]) + bytes(range(16))
failures = 0


def opt(code, value):
    return bytes([code, len(value)]) + value


def bootp(xid, mac=b"\x52\x54\x00\x12\x34\x56", op=1, htype=1, hlen=6,
          ciaddr=b"\0\0\0\0", file_field=b"", sname=b""):
    hdr = struct.pack("!BBBBIHH", op, htype, hlen, 0, xid, 0, 0x8000)
    hdr += ciaddr + b"\0" * 12                     # ciaddr yiaddr siaddr giaddr
    hdr += mac.ljust(16, b"\0")
    hdr += sname.ljust(64, b"\0") + file_field.ljust(128, b"\0")
    assert len(hdr) == 236
    return hdr + COOKIE


def pxe_options(msg_type=1, arch=0, ipxe=False, user_class=None,
                vendor=b"PXEClient:Arch:00000:UNDI:002001", uuid=True):
    o = opt(53, bytes([msg_type]))
    if vendor is not None:
        o += opt(60, vendor)
    if arch is not None:
        o += opt(93, struct.pack("!H", arch))
    if uuid:
        o += opt(97, UUID)
    if ipxe:
        o += opt(175, b"\xb1\x05\x01\x80\x86\x10\x0e")
    if user_class is not None:
        o += opt(77, user_class)
    return o


def exchange(packet, port, timeout=0.6):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    s.sendto(packet, (HOST, port))
    try:
        data, _ = s.recvfrom(4096)
        return data
    except socket.timeout:
        return None
    finally:
        s.close()


def parse_reply(data):
    assert data[0] == 2, "op is not BOOTREPLY"
    xid = struct.unpack("!I", data[4:8])[0]
    siaddr = socket.inet_ntoa(data[20:24])
    file_field = data[108:236].split(b"\0")[0].decode()
    assert data[236:240] == COOKIE, "no magic cookie"
    opts, i = {}, 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, ln = data[i], data[i + 1]
        assert i + 2 + ln <= len(data), "reply option runs past the end"
        opts[code] = data[i + 2:i + 2 + ln]
        i += 2 + ln
    assert i < len(data), "reply has no end option"
    return xid, siaddr, file_field, opts


def check(name, ok, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + name + (": " + detail if detail else ""))
    if not ok:
        failures += 1


def expect_offer(name, packet, port, want_type, want_file, xid, http=False):
    data = exchange(packet, port)
    if EXPECT_SILENCE:
        check(name + " (unhealthy: silent)", data is None)
        return
    if data is None:
        check(name, False, "no answer")
        return
    try:
        rxid, siaddr, file_field, opts = parse_reply(data)
        problems = []
        if rxid != xid:
            problems.append("xid")
        if opts.get(53) != bytes([want_type]):
            problems.append("message type %r" % opts.get(53))
        if siaddr != ADDR:
            problems.append("siaddr " + siaddr)
        if opts.get(54) != socket.inet_aton(ADDR):
            problems.append("option 54")
        if opts.get(60) != (b"HTTPClient" if http else b"PXEClient"):
            problems.append("option 60 %r" % opts.get(60))
        if http and (43 in opts or 66 in opts):
            problems.append("PXE options 43/66 in an HTTP boot offer")
        if not http and opts.get(43) != bytes([6, 1, 8, 255]):
            problems.append("option 43 %r" % opts.get(43))
        if opts.get(97) != UUID:
            problems.append("option 97 not echoed")
        boot = opts.get(67, b"").decode()
        if not (boot == want_file or (want_file == "EFI-URI" and re.fullmatch(
                r"http://%s:[0-9]+/ipxe\.efi" % re.escape(ADDR), boot)) or (want_file == "URL" and boot.startswith(
                "http://%s:" % ADDR) and "/boot.ipxe?mac=${net0/mac}" in boot
                and re.search(r"&token=[0-9]+\.[0-9a-f]{8}\.[A-Za-z0-9_-]{43}$", boot))):
            problems.append("boot file %r" % boot)
        if file_field != boot and len(boot) < 128:
            problems.append("file field %r" % file_field)
        if b"\0\0\0\0" != data[16:20]:
            problems.append("yiaddr set: a proxy must not hand out addresses")
        check(name, not problems, ", ".join(problems) or boot)
    except AssertionError as e:
        check(name, False, str(e))


def expect_silence(name, packet, port=DHCP_PORT):
    data = exchange(packet, port, timeout=0.4)
    check(name + " -> silence", data is None,
          "" if data is None else "answered %d bytes" % len(data))


xid = int.from_bytes(os.urandom(4), "big")


def nx():
    global xid
    xid = (xid + 1) & 0xFFFFFFFF
    return xid


OFFER, ACK = 2, 5
# Client kinds.
x = nx(); expect_offer("BIOS PXE DISCOVER", bootp(x) + pxe_options(arch=0) + b"\xff", DHCP_PORT, OFFER, "undionly.kpxe", x)
x = nx(); expect_offer("UEFI x64 (arch 7) DISCOVER", bootp(x) + pxe_options(arch=7) + b"\xff", DHCP_PORT, OFFER, "ipxe.efi", x)
x = nx(); expect_offer("UEFI BC (arch 9) DISCOVER", bootp(x) + pxe_options(arch=9) + b"\xff", DHCP_PORT, OFFER, "ipxe.efi", x)
HTTP_CLASS = b"HTTPClient:Arch:00016:UNDI:003001"
x = nx(); expect_offer("UEFI HTTP boot (HTTPClient, arch 16) DISCOVER", bootp(x) + pxe_options(arch=16, vendor=HTTP_CLASS) + b"\xff", DHCP_PORT, OFFER, "EFI-URI", x, http=True)
x = nx(); expect_offer("iPXE (option 175) DISCOVER", bootp(x) + pxe_options(arch=0, ipxe=True) + b"\xff", DHCP_PORT, OFFER, "URL", x)
x = nx(); expect_offer("iPXE (user class iPXE) DISCOVER", bootp(x) + pxe_options(arch=7, user_class=b"iPXE") + b"\xff", DHCP_PORT, OFFER, "URL", x)
x = nx(); expect_offer("iPXE (RFC 3004 user class) DISCOVER", bootp(x) + pxe_options(arch=0, user_class=b"\x04iPXE") + b"\xff", DHCP_PORT, OFFER, "URL", x)
x = nx(); expect_offer("PXE REQUEST on 4011", bootp(x, ciaddr=b"\x7f\0\0\x01") + pxe_options(msg_type=3, arch=0) + b"\xff", PXE_PORT, ACK, "undionly.kpxe", x)
x = nx(); expect_offer("REQUEST on 67 with our server id", bootp(x) + pxe_options(msg_type=3, arch=0) + opt(54, socket.inet_aton(ADDR)) + b"\xff", DHCP_PORT, ACK, "undionly.kpxe", x)
# Overload (52 = 1): options 60 and 93 in the file field.
x = nx()
file_opts = opt(60, b"PXEClient:Arch:00007") + opt(93, b"\x00\x07") + b"\xff"
expect_offer("option overload into the file field", bootp(x, file_field=file_opts) + opt(53, b"\x01") + opt(52, b"\x01") + opt(97, UUID) + b"\xff", DHCP_PORT, OFFER, "ipxe.efi", x)

# Silence.
expect_silence("HTTPClient of arch 7 (not x64 UEFI HTTP)", bootp(nx()) + pxe_options(arch=7, vendor=HTTP_CLASS) + b"\xff")
expect_silence("IA32 EFI (arch 6): no boot file", bootp(nx()) + pxe_options(arch=6) + b"\xff")
expect_silence("ARM64 (arch 11): no boot file", bootp(nx()) + pxe_options(arch=11) + b"\xff")
expect_silence("plain DHCP DISCOVER (no PXEClient)", bootp(nx()) + pxe_options(vendor=None) + b"\xff")
expect_silence("REQUEST on 67 for another server", bootp(nx()) + pxe_options(msg_type=3) + opt(54, b"\x0a\x09\x09\x09") + b"\xff")
expect_silence("DISCOVER sent to 4011", bootp(nx()) + pxe_options() + b"\xff", PXE_PORT)
expect_silence("INFORM", bootp(nx()) + pxe_options(msg_type=8) + b"\xff")

# BAD-INPUTS.md: DHCP / ProxyDHCP.
good = bootp(nx()) + pxe_options()
expect_silence("option length past the packet end", good + bytes([61, 200, 1, 2, 3]))
expect_silence("option code without length byte at the end", good + bytes([61]))
expect_silence("missing end option", good)
expect_silence("packet shorter than the BOOTP header", bootp(nx())[:100])
expect_silence("header + cookie only (no options, no end)", bootp(nx()))
expect_silence("huge packet (3000 bytes)", good + b"\xff" + b"\0" * 2800)
expect_silence("BOOTREPLY sent to the server", bootp(nx(), op=2) + pxe_options() + b"\xff")
expect_silence("hlen 255 (CVE-2011-2749 style)", bootp(nx(), hlen=255) + pxe_options() + b"\xff")
expect_silence("no magic cookie", bootp(nx())[:236] + b"\0\0\0\0" + pxe_options() + b"\xff")
expect_silence("BOOTP without message type", bootp(nx()) + opt(60, b"PXEClient") + b"\xff")
expect_silence("option 93 of odd length", bootp(nx()) + opt(53, b"\x01") + opt(60, b"PXEClient") + opt(93, b"\0") + b"\xff")
expect_silence("option 53 of length 0", bootp(nx()) + bytes([53, 0]) + opt(60, b"PXEClient") + b"\xff")
expect_silence("overload value 7", bootp(nx()) + pxe_options() + opt(52, b"\x07") + b"\xff")
expect_silence("overload whose file-field option runs past the field", bootp(nx(), file_field=bytes([60, 250]) + b"PXE") + pxe_options() + opt(52, b"\x01") + b"\xff")
expect_silence("empty datagram", b"")

# Still serving after all of it.
x = nx(); expect_offer("BIOS PXE DISCOVER after the bad inputs", bootp(x) + pxe_options(arch=0) + b"\xff", DHCP_PORT, OFFER, "undionly.kpxe", x)

print("%d failed" % failures)
sys.exit(1 if failures else 0)
