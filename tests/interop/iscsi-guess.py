#!/usr/bin/env python3
"""A CHAP guessing loop against an iSCSI target, for iscsi-auth.sh.

iscsi-guess.py HOST PORT SOURCE TARGET USER ATTEMPTS SECONDS [INITIATOR]
Each attempt is one connection from SOURCE (a local address) doing a
real login: AuthMethod=CHAP, CHAP_A=5, then CHAP_N=USER with a wrong
CHAP_R.  Stops after ATTEMPTS attempts or SECONDS seconds.  Prints one
JSON line: attempts, "evaluated" (the target handed out a challenge and
judged a guess), "refused_early" (refused before any challenge: the
source is locked out), and the rate of evaluated guesses per second.
"""
import json, os, socket, sys, time

from sockutil import iscsi_login_pdu as pdu, iscsi_login_answer as recv_pdu

host, port, source, target, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
attempts, seconds = int(sys.argv[6]), float(sys.argv[7])
initiator = sys.argv[8] if len(sys.argv) > 8 else "iqn.2000-01.test:guesser"


def attempt(itt):
    """'evaluated', 'refused_early' or 'other'."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.bind((source, 0))
        s.connect((host, port))
        s.sendall(pdu(0x00, itt, [("InitiatorName", initiator),
                                  ("TargetName", target), ("SessionType", "Normal"),
                                  ("AuthMethod", "CHAP")]))
        st, _ = recv_pdu(s)
        if st == 0x0201:
            return "refused_early"
        if st != 0:
            return "other"
        s.sendall(pdu(0x00, itt, [("CHAP_A", "5")]))
        st, keys = recv_pdu(s)
        if st != 0 or "CHAP_C" not in keys:
            return "other"
        s.sendall(pdu(0x81, itt, [("CHAP_N", user), ("CHAP_R", "0x" + os.urandom(16).hex())]))
        st, _ = recv_pdu(s)
        return "evaluated" if st == 0x0201 else "other"
    except (EOFError, OSError):
        return "other"
    finally:
        s.close()


counts = {"evaluated": 0, "refused_early": 0, "other": 0}
t0 = time.monotonic()
n = 0
while n < attempts and time.monotonic() - t0 < seconds:
    counts[attempt(n + 1)] += 1
    n += 1
dt = time.monotonic() - t0
counts.update(attempts=n, seconds=round(dt, 2), evaluated_per_s=round(counts["evaluated"] / dt, 1))
print(json.dumps(counts))
