#!/bin/bash
# version-automerge: with the farm's auto-merge depth 3 (the default of a
# vDisk without its own), the seal that makes the
# chain longer than 3 files (base included) merges the updates into one new layer over the
# base; the new newest version reads exactly what the chain did, and
# every store file passes qemu-img check.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io python3

init_vdisk vd 32
df device add mnt --mac 52:54:00:00:00:03 --vdisk vd --type maintenance >/dev/null
df farm set auto-merge-depth 3 >/dev/null
json vdisk show vd
jcheck "$T/j.json" 'd["auto_merge_depth"] == 3' 'd["auto_merge_depth_from"] == "farm"'
start_streamsvc

# chain length (files) of the newest version, from qemu-img
depth() {
  local top
  top=$(ls "$FARM/store/vd/"vd.*.qcow2 | sed 's/.*vd\.\([0-9]*\)\.qcow2/\1/' | sort -n | tail -1)
  (cd "$FARM/store/vd" && qemu-img info --backing-chain --output=json "vd.$top.qcow2" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
}

for v in 1 2; do
  df version new vd >/dev/null
  qio device/mnt "write -P $((0x40 + v)) $((v * 2))M 1M" "flush"
  df version seal vd >"$T/seal.out" || fail "seal $v"
  grep -q "merged into" "$T/seal.out" && fail "merge before the limit (seal $v)"
done
[ "$(depth)" = 3 ] || fail "3 files expected before the limit, got $(depth)"

df version new vd >/dev/null
qio device/mnt "write -P 0x43 6M 1M" "flush"
df version seal vd >"$T/seal.out" 2>"$T/seal.err" || fail "seal 3"
grep -q "past the auto-merge depth, merged into version 4" "$T/seal.out" ||
  { cat "$T/seal.out" "$T/seal.err"; fail "no automatic merge after the 3rd seal"; }
# the console's log line on stderr is timestamped like the daemons'
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z diskfarm\[[0-9]+\]: notice: vdisk vd: chain depth 4 is past 3' "$T/seal.err" ||
  { cat "$T/seal.err"; fail "auto-merge log line not timestamped"; }
[ "$(depth)" = 2 ] || fail "merged version should be one layer over the base, chain $(depth)"
qemu-img compare -q "$FARM/store/vd/vd.3.qcow2" "$FARM/store/vd/vd.4.qcow2" ||
  fail "merged layer differs from the chain it replaces"
qio vdisk/vd@4 "read -P 0x41 2M 1M" "read -P 0x42 4M 1M" "read -P 0x43 6M 1M"
check_store vd
pass "auto-merge at depth 3: the 3rd seal merged updates 1..3 into version 4"
