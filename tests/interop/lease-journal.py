#!/usr/bin/python3
# Check the write journal of cache leases (DISKFARM_TEST_WRITE_JOURNAL,
# blk_lease.h): lines "EPOCH SERVER START_NS END_NS OP".  Fails when two
# epochs ever wrote at once (an epoch's writes must all end before the
# next epoch's first one starts) or when one epoch has two writers.
#   lease-journal.py JOURNAL [MIN_EPOCHS]
import sys

spans = {}
for line in open(sys.argv[1]):
    e, who, t0, t1, op = line.split()
    e, t0, t1 = int(e), int(t0), int(t1)
    s = spans.setdefault(e, [who, t0, t1, 0])
    if s[0] != who:
        sys.exit("FAIL: epoch %d written by %s and %s" % (e, s[0], who))
    s[1], s[2], s[3] = min(s[1], t0), max(s[2], t1), s[3] + 1
epochs = sorted(spans)
for a, b in zip(epochs, epochs[1:]):
    if spans[a][2] >= spans[b][1]:
        sys.exit("FAIL: two writers at once: epoch %d (%s) wrote until %d, "
                 "epoch %d (%s) began at %d (overlap %.3f ms)"
                 % (a, spans[a][0], spans[a][2], b, spans[b][0], spans[b][1],
                    (spans[a][2] - spans[b][1]) / 1e6))
need = int(sys.argv[2]) if len(sys.argv) > 2 else 1
if len(epochs) < need:
    sys.exit("FAIL: %d epochs in the journal, expected at least %d"
             % (len(epochs), need))
for a, b in zip(epochs, epochs[1:]):
    print("epoch %d (%s, %d writes) ended %.3f ms before epoch %d (%s) began"
          % (a, spans[a][0], spans[a][3], (spans[b][1] - spans[a][2]) / 1e6,
             b, spans[b][0]))
