#!/usr/bin/env python3
"""Converts an nbdkit log filter file to a boot-storm trace (traces/README):
one line per request, "t_us op offset length", t_us from the first request.
Only requests that returned success are kept; the handshake is dropped."""
import re
import sys
from datetime import datetime

OPS = {"Read": "R", "Write": "W", "Flush": "F", "Trim": "T", "Zero": "W"}
start = re.compile(r"^(\S+ \S+) connection=\d+ (\w+) id=(\d+) (.*)$")
done = re.compile(r"^\S+ \S+ connection=\d+ \.\.\.(\w+) id=(\d+) return=(-?\d+)")


def field(rest, name):
    m = re.search(r"\b%s=(0x[0-9a-f]+|\d+)" % name, rest)
    return int(m.group(1), 0) if m else 0


def main(path):
    pending, out, t0 = {}, [], None
    for line in open(path):
        m = start.match(line)
        if m and m.group(2) in OPS:
            ts = datetime.strptime(m.group(1)[:26], "%Y-%m-%d %H:%M:%S.%f")
            pending[m.group(3)] = (ts, OPS[m.group(2)], field(m.group(4), "offset"),
                                   field(m.group(4), "count"))
            continue
        m = done.match(line)
        if m and m.group(2) in pending:
            req = pending.pop(m.group(2))
            if m.group(3) == "0":
                out.append(req)
    out.sort(key=lambda r: r[0])
    print("# t_us op offset length (from %s)" % path.split("/")[-1])
    for ts, op, off, cnt in out:
        t0 = t0 or ts
        print("%d %s %d %d" % (int((ts - t0).total_seconds() * 1e6), op, off, cnt))


main(sys.argv[1])
