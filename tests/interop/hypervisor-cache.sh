#!/bin/bash
# hypervisor-cache: cache mode hypervisor end to end.  The device's writes
# go to a qcow2 overlay on the "hypervisor" (here: a file qemu-io opens)
# whose backing is the device's NBD export; streamsvc serves that export
# read-only from the version the boot generation pinned and holds no write
# state (no cache directory, no cache bytes); a promotion reaches it at the
# next generation (`device reset`), and the overlay is made again then.
# iSCSI: the same device target answers writes with WRITE PROTECTED.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io nbdinfo curl python3

IQN=iqn.2026-11.org.diskfarm
init_vdisk vd 16 # v0: zero at 3M and 5M
json device add hv --mac 52:54:00:00:00:31 --vdisk vd --cache hypervisor
jcheck "$T/j.json" 'd["cache_mode"] == "hypervisor"'
df device add mnt --mac 52:54:00:00:00:32 --vdisk vd --type maintenance >/dev/null
df device add bad --mac 52:54:00:00:00:33 --vdisk vd --cache hypervisor:1 2>"$T/bad.err" &&
  fail "cache mode hypervisor:1 accepted"
grep -q "hypervisor" "$T/bad.err" || fail "message: $(cat "$T/bad.err")"
pass "device add --cache hypervisor (and a malformed mode refused)"

# qro EXPORT CMD...: read-only qemu-io on an export (all checks must pass)
qro() {
  local e=$1; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -r -f raw "${args[@]}" "$(uri "$e")" >"$T/qro.out" 2>&1 ||
    { cat "$T/qro.out"; fail "qemu-io -r $e $*"; }
  ! grep -q "failed" "$T/qro.out" || { cat "$T/qro.out"; fail "qemu-io -r $e $*"; }
}

json version new vd
start_streamsvc --iscsi-listen 127.0.0.1:0
# v1 (test): 0x5a at 3M, sealed but not yet production
qio device/mnt "write -P 0x5a 3M 64k" "flush"
json version seal vd
jcheck "$T/j.json" 'd["version"] == 1' 'd["state"] == "test"'

# the export: read-only NBD, version 0
nbdinfo --json "$(uri device/hv)" >"$T/info.json" || fail "nbdinfo device/hv"
jcheck "$T/info.json" 'd["exports"][0]["is_read_only"] is True' \
  'd["exports"][0]["can_trim"] is False' \
  'd["exports"][0]["export-size"] == 16 << 20'
qro device/hv "read -P 0 3M 64k" "read -P 0 5M 64k"
out=$(qemu-io -f raw -c "write -P 0x77 0 4k" "$(uri device/hv)" 2>&1) &&
  fail "a write to the hypervisor-mode export was accepted: $out"
echo "$out" | grep -Eqi "read-only|read only|permission|not permitted" ||
  fail "write refusal text: $out"
pass "device/hv: NBD read-only, serves v0, qemu-io write refused ($(echo "$out" | head -n 1))"

# iSCSI: the device target is read-only too (WP in MODE SENSE, writes get
# DATA PROTECT / WRITE PROTECTED) - libiscsi's own read-only SBC test
if command -v iscsi-test-cu >/dev/null &&
   iscsi-test-cu --list 2>/dev/null | grep -qx "SCSI.ReadOnly.ReadOnlySBC"; then
  P=$(iscsi_port)
  [ -n "$P" ] || fail "no iSCSI port in the log"
  timeout 120 iscsi-test-cu -d -s -t SCSI.ReadOnly.ReadOnlySBC \
    "iscsi://127.0.0.1:$P/$IQN:hv/1" >"$T/cu.log" 2>&1 ||
    { cat "$T/cu.log"; fail "iscsi-test-cu SCSI.ReadOnly.ReadOnlySBC"; }
  grep -Eq "Run Summary|tests" "$T/cu.log" || { cat "$T/cu.log"; fail "cu output"; }
  grep -Eq "asserts +[0-9]+ +[0-9]+ +[0-9]+ +0" "$T/cu.log" ||
    { cat "$T/cu.log"; fail "iscsi-test-cu asserts failed"; }
  pass "iSCSI $IQN:hv: SCSI.ReadOnly.ReadOnlySBC (write protected)"
else
  echo "skip: iscsi-test-cu with SCSI.ReadOnly.ReadOnlySBC not installed"
fi

# the overlay on the hypervisor: writes land there, the server keeps none
qemu-img create -q -f qcow2 -F raw -b "$(uri device/hv)" "$T/hv.qcow2" ||
  fail "qemu-img create overlay"
qemu-img info --output=json "$T/hv.qcow2" >"$T/ov.json"
jcheck "$T/ov.json" "d['backing-filename'] == '$(uri device/hv)'" \
  'd["backing-filename-format"] == "raw"' 'd["virtual-size"] == 16 << 20'
qemu-io -f qcow2 -c "write -P 0xab 5M 64k" -c "flush" "$T/hv.qcow2" >"$T/w.out" 2>&1 ||
  { cat "$T/w.out"; fail "qemu-io write into the overlay"; }
qemu-io -f qcow2 -c "read -P 0xab 5M 64k" -c "read -P 0 3M 64k" \
  -c "read -v 512 13" "$T/hv.qcow2" >"$T/r.out" 2>&1 ||
  { cat "$T/r.out"; fail "qemu-io read back"; }
grep -q "failed" "$T/r.out" && { cat "$T/r.out"; fail "overlay read back"; }
grep -q "44 49 53 4b 46 41 52 4d 2d 42 41 53 45" "$T/r.out" || { cat "$T/r.out"; fail "base data through the overlay"; }
qro device/hv "read -P 0 5M 64k"
[ -e "$FARM/cache/hv" ] && fail "a cache directory was made for device hv"
pass "overlay: write + read back through qemu-io; export unchanged; no cache dir"

# /v1/sessions while a reader holds the export: no cache bytes; /metrics
# has no cache series for hv
qemu-io -f qcow2 -c "read 0 64k" -c "sleep 3000" "$T/hv.qcow2" >/dev/null 2>&1 &
holder=$!
wait_live hv
admin_curl -sf "http://$ADMIN/v1/sessions" >"$T/s.json" || fail "/v1/sessions"
jcheck "$T/s.json" '[s for s in d if s.get("device") == "hv"]' \
  'all(s["cache_bytes"] == 0 for s in d if s.get("device") == "hv")'
curl -sf "http://$ADMIN/metrics" >"$T/m" || fail "/metrics"
grep -q 'diskfarm_cache_bytes{device="hv"' "$T/m" && fail "cache metric for hv"
wait $holder || fail "qemu-io holder"
pass "/v1/sessions: device hv has 0 cache bytes, no cache metric"

# promotion: same generation keeps v0; device reset pins v1
json version promote vd 1 --to production
qro device/hv "read -P 0 3M 64k"
json device reset hv
qro device/hv "read -P 0x5a 3M 64k" "read -P 0 5M 64k"
# a fresh overlay over the new generation: v1's data, the old writes gone
qemu-img create -q -f qcow2 -u -F raw -b "$(uri device/hv)" "$T/hv.qcow2" 16M
qemu-io -f qcow2 -c "read -P 0x5a 3M 64k" -c "read -P 0 5M 64k" "$T/hv.qcow2" \
  >"$T/r2.out" 2>&1 || { cat "$T/r2.out"; fail "fresh overlay read"; }
grep -q "failed" "$T/r2.out" && { cat "$T/r2.out"; fail "fresh overlay content"; }
pass "promotion seen after device reset only; fresh overlay reads v1"
