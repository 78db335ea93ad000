#!/usr/bin/env python3
"""One iSCSI session that a test holds open, for iscsi-maintenance.sh.

iscsi-hold.py HOST PORT INITIATOR TARGET ISID_HEX PATTERN_BYTE SECONDS
Logs in (no authentication, straight to the operational stage), writes
one 512-byte block of PATTERN_BYTE at LBA 0 as immediate data, then
SYNCHRONIZE CACHE (10) (after a TEST UNIT READY), and prints "ready" once both are acknowledged
(GOOD status).  It then waits, sending nothing, until the target closes
the connection or SECONDS pass, and prints "closed after N s" or "still
open".  Exit 1 with the reason when the login or a command fails."""
import socket
import struct
import sys
import time

from sockutil import iscsi_login_pdu, iscsi_recv_pdu

host, port, initiator, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
isid, pattern, seconds = bytes.fromhex(sys.argv[5]), int(sys.argv[6], 0), float(sys.argv[7])


def scsi_cmd(itt, cmdsn, cdb, data=b""):
    """A SCSI Command PDU: LUN 1 (the disk), simple task, W flag with
    immediate data."""
    bhs = bytearray(48)
    bhs[0] = 0x01
    bhs[1] = 0x80 | (0x20 if data else 0) | 0x01
    bhs[8:10] = b"\0\1"
    bhs[5:8] = len(data).to_bytes(3, "big")
    struct.pack_into(">III", bhs, 16, itt, len(data), cmdsn)
    bhs[32:32 + len(cdb)] = cdb
    return bytes(bhs) + data + b"\0" * ((-len(data)) % 4)


def await_status(s, itt):
    """SCSI status of task itt and its sense data (hex, "" when none)."""
    while True:
        bhs, data = iscsi_recv_pdu(s)
        if bhs[0] & 0x3f == 0x21 and struct.unpack(">I", bhs[16:20])[0] == itt:
            return bhs[3], data[2:].hex()


s = socket.create_connection((host, port), timeout=10)
s.sendall(iscsi_login_pdu(0x87, 1, [("InitiatorName", initiator), ("TargetName", target),
                                    ("SessionType", "Normal"), ("ImmediateData", "Yes"),
                                    ("MaxRecvDataSegmentLength", "65536")], isid))
bhs, _ = iscsi_recv_pdu(s)
if bhs[36:38] != b"\0\0":
    sys.exit("login refused: status 0x%02x%02x" % (bhs[36], bhs[37]))
cmdsn = struct.unpack(">I", bhs[28:32])[0]  # ExpCmdSN
# TEST UNIT READY takes the new nexus's unit attention (POWER ON RESET)
s.sendall(scsi_cmd(2, cmdsn, bytes(6)))
await_status(s, 2)
write10 = bytes([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0])
s.sendall(scsi_cmd(3, cmdsn + 1, write10, bytes([pattern]) * 512))
status, sense = await_status(s, 3)
if status != 0:
    sys.exit("WRITE (10): status 0x%02x, sense %s" % (status, sense))
s.sendall(scsi_cmd(4, cmdsn + 2, bytes([0x35] + [0] * 9)))
status, sense = await_status(s, 4)
if status != 0:
    sys.exit("SYNCHRONIZE CACHE (10): status 0x%02x, sense %s" % (status, sense))
print("ready", flush=True)
t0 = time.monotonic()
s.settimeout(0.2)
while time.monotonic() - t0 < seconds:
    try:
        if not s.recv(65536):
            break
    except socket.timeout:
        continue
    except OSError:
        break
else:
    print("still open", flush=True)
    sys.exit(0)
print("closed after %.1f s" % (time.monotonic() - t0), flush=True)
