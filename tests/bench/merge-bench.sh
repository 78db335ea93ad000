#!/bin/bash
# Merge benchmark: `diskfarm version merge --base` and `--updates` of a
# 10-version chain over a 4 GiB disk vs `qemu-img convert` of the same
# chain, same run.  Not a pass/fail test; prints seconds and ratios
# (qemu-img time / diskfarm time: >= 1.0 means diskfarm is as fast).
# The chain is built the product's way: base import, then 9 maintenance
# versions written over NBD through streamsvc and sealed.
# Usage: tests/bench/merge-bench.sh [BUILD_DIR]   (default build)
#   BENCH_LAYER_MIB: MiB written per version (default 48)
set -eu
cd "$(dirname "$0")/../.."
build=$(realpath "${1:-build}")
STREAMSVC=$build/streamsvc/streamsvc
DISKFARM=$build/console/diskfarm
mib=${BENCH_LAYER_MIB:-48}
for t in qemu-img qemu-io; do
  command -v $t >/dev/null || { echo "bench: $t missing"; exit 77; }
done
T=$(mktemp -d /tmp/df-bench.XXXXXX)
FARM=$T/farm
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; sleep 0.3; rm -rf $T' EXIT
df() { "$DISKFARM" --farm "$FARM" "$@"; }
now() { date +%s.%N; }

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
sync

# updates 1..9 -> version 10 (backed by 0); then base -> version 11
t0=$(now); (cd "$S" && qemu-img convert -O qcow2 -B vd.0.qcow2 -F qcow2 vd.9.qcow2 qemu-upd.qcow2); t1=$(now)
df version merge vd --updates 1..9 >/dev/null; t2=$(now)
qemu-img compare -q "$S/vd.10.qcow2" "$S/vd.9.qcow2" || echo "MISMATCH: merged updates vs the chain"
qemu-img compare -q "$S/vd.10.qcow2" "$S/qemu-upd.qcow2" || echo "note: qemu-img convert -B output differs from the chain-equal layer"
t3=$(now); qemu-img convert -O qcow2 "$S/vd.9.qcow2" "$T/qemu-base.qcow2"; t4=$(now)
df version merge vd --base >/dev/null; t5=$(now)
qemu-img compare -q "$S/vd.11.qcow2" "$T/qemu-base.qcow2" || echo "MISMATCH: merged base"
ls -l "$S/vd.10.qcow2" "$S/qemu-upd.qcow2" "$S/vd.11.qcow2" "$T/qemu-base.qcow2" | awk '{print $5, $9}'
python3 - "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" <<'PY'
import sys
t = [float(x) for x in sys.argv[1:]]
for name, q, d in (("merge --updates 1..9", t[1] - t[0], t[2] - t[1]),
                   ("merge --base (10 files)", t[4] - t[3], t[5] - t[4])):
    print("%-24s 4 GiB: qemu-img convert %.2f s  diskfarm %.2f s  ratio %.2fx"
          % (name, q, d, q / d))
PY
