#!/bin/bash
# Merge benchmark: `diskfarm version merge --updates 1..9` and `--base` of a
# 10-version chain over a 4 GiB disk vs the equivalent qemu-img operations
# on the same chain, same run.  Not a pass/fail test; prints seconds, CPU
# time per GiB written and ratios (qemu time / diskfarm time: >= 1.0 means
# diskfarm is as fast).
#
# Peers (every output is checked chain-equal with `qemu-img compare`):
#   --base     qemu-img convert -O qcow2 of the top of the chain.
#   --updates  cp of the top layer + safe `qemu-img rebase` onto version 0:
#              qemu's way to collapse layers 1..9 into one over 0 (`convert
#              -B` copies only what the top file allocates, so its output
#              is not chain-equal; it is not a peer).
# qemu-img does not fsync its output (convert only fdatasyncs the empty
# image while creating it), diskfarm does (temp file + fsync + rename, and
# hashes the file with SHA-256): qemu is timed as shipped and with a
# `sync FILE` afterwards (+fsync).
# The chain is built the product's way: base import, then 9 maintenance
# versions written over NBD through streamsvc and sealed.
# Usage: tests/bench/merge-bench.sh [BUILD_DIR]   (default build)
#   BENCH_LAYER_MIB: MiB written per version (default 48)
#   BENCH_REPS: repetitions of the measurements (default 3)
set -eu
. "$(dirname "$0")/bench-lib.sh"
mib=${BENCH_LAYER_MIB:-48}
reps=${BENCH_REPS:-3}
bench_need qemu-img qemu-io python3
T=$(mktemp -d /tmp/df-bench.XXXXXX)
FARM=$T/farm
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; sleep 0.3; rm -rf $T' EXIT
df() { "$DISKFARM" --farm "$FARM" "$@"; }

echo "preparing: 4 GiB base with 256 MiB of data, 9 versions of $mib MiB each"
truncate -s 4G "$T/base.raw"
for i in $(seq 0 15); do
  head -c 16M /dev/urandom | dd of="$T/base.raw" bs=16M seek=$((i * 16)) conv=notrunc status=none
done
df init >/dev/null
df vdisk import vd "$T/base.raw" >/dev/null
rm "$T/base.raw"
df device add mnt --mac 52:54:00:00:00:03 --vdisk vd --type maintenance >/dev/null
"$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/sock" --admin-listen none 2>"$T/log" &
pid=$!
for _ in $(seq 100); do [ -S "$T/sock" ] && break; sleep 0.1; done
head -c "${mib}M" /dev/urandom >"$T/chunk"
for v in $(seq 1 9); do
  df version new vd >/dev/null
  # spread writes: several 1 MiB-aligned runs plus unaligned 4 KiB pieces
  cmds=()
  for k in $(seq 0 $((mib / 4 - 1))); do
    off=$(( (v * 397 + k * 83) % 4000 ))
    cmds+=(-c "write -P $((v + k)) ${off}M 4M")
    cmds+=(-c "write -P $v $(( off * 1048576 + 1056768 + v * 4096 )) 4k")
  done
  qemu-io -f raw "${cmds[@]}" -c flush "nbd+unix:///device/mnt?socket=$T/sock" >/dev/null
  df version seal vd >/dev/null
done
kill $pid; wait $pid 2>/dev/null || true; pid=""
S=$FARM/store/vd
du -sh "$S" | sed 's/^/store: /'
cp -a "$FARM" "$T/farm.orig"

# timed NAME CMD...: appends "NAME real user sys" to $T/times
timed() {
  local name=$1 TIMEFORMAT="$1 %R %U %S"
  shift
  { time "$@" >/dev/null; } 2>>"$T/times"
}
size_of() { echo "$1 $(stat -c %s "$2")" >>"$T/sizes"; }

qemu_updates() {
  (cd "$S" && timed q-upd-cp cp vd.9.qcow2 qemu-upd.qcow2 &&
     timed q-upd qemu-img rebase -f qcow2 -b vd.0.qcow2 -F qcow2 qemu-upd.qcow2 &&
     timed q-upd-sync sync qemu-upd.qcow2)
  size_of q-upd "$S/qemu-upd.qcow2"
}
qemu_base() {
  timed q-base qemu-img convert -O qcow2 "$S/vd.9.qcow2" "$T/qemu-base.qcow2"
  timed q-base-sync sync "$T/qemu-base.qcow2"
  size_of q-base "$T/qemu-base.qcow2"
}
df_updates() {
  timed d-upd df version merge vd --updates 1..9
  size_of d-upd "$S/vd.10.qcow2"
}
df_base() {
  timed d-base df version merge vd --base
  size_of d-base "$S/vd.10.qcow2"
}
restore() {
  rm -rf "$FARM" "$T/qemu-base.qcow2"
  cp -a "$T/farm.orig" "$FARM"
  sync
}

# each merge starts from the 10-version chain; alternate who goes first
for r in $(seq "$reps"); do
  echo "round $r" >>"$T/times"
  restore
  if [ $((r % 2)) -eq 1 ]; then qemu_updates; df_updates
  else df_updates; qemu_updates; fi
  qemu-img compare -q "$S/vd.10.qcow2" "$S/vd.9.qcow2" || echo "MISMATCH: merged updates vs the chain"
  qemu-img compare -q "$S/qemu-upd.qcow2" "$S/vd.9.qcow2" || echo "MISMATCH: qemu rebase vs the chain"
  qemu-img check -q "$S/vd.10.qcow2" || echo "CHECK FAILED: merged updates"
  restore
  if [ $((r % 2)) -eq 1 ]; then qemu_base; df_base
  else df_base; qemu_base; fi
  qemu-img compare -q "$S/vd.10.qcow2" "$T/qemu-base.qcow2" || echo "MISMATCH: merged base"
  qemu-img check -q "$S/vd.10.qcow2" || echo "CHECK FAILED: merged base"
done
python3 - "$T/times" "$T/sizes" <<'PY'
import sys
rounds, cur = [], None
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "round":
        cur = {}
        rounds.append(cur)
    else:
        cur[f[0]] = tuple(float(x) for x in f[1:])
size = {}
for line in open(sys.argv[2]):
    n, b = line.split()
    size[n] = int(b)
G = 1 << 30
rows = {}
for i, t in enumerate(rounds, 1):
    for label, q, extra, qs, d in (
            ("merge --updates 1..9", ("q-upd-cp", "q-upd"), "q-upd-sync",
             "q-upd", "d-upd"),
            ("merge --base (10 files)", ("q-base",), "q-base-sync", "q-base",
             "d-base")):
        qr = sum(t[k][0] for k in q)
        qcpu = sum(t[k][1] + t[k][2] for k in q)
        qf = qr + t[extra][0]
        dr, dcpu = t[d][0], t[d][1] + t[d][2]
        row = (qr, qf, dr, qr / dr, qf / dr, qcpu / (size[qs] / G),
               dcpu / (size[d] / G))
        rows.setdefault(label, []).append(row)
        print("round %d %-24s qemu %.2f s (+fsync %.2f s)  diskfarm %.2f s  "
              "ratio %.2fx (+fsync %.2fx)  CPU s/GiB written: qemu %.2f "
              "diskfarm %.2f" % ((i, label) + row))
for label, rs in rows.items():
    # the round with the median ratio, whole (columns stay consistent)
    med = list(sorted(rs, key=lambda r: r[3])[(len(rs) - 1) // 2])
    print("median  %-24s qemu %.2f s (+fsync %.2f s)  diskfarm %.2f s  "
          "ratio %.2fx (+fsync %.2fx)  CPU s/GiB written: qemu %.2f "
          "diskfarm %.2f" % tuple([label] + med))
for n in sorted(size):
    print("written %-7s %d MiB" % (n, size[n] >> 20))
PY
