#!/bin/bash
# console: changing what exists (issue 9): collection set/remove, server
# set, farm set auto-merge-depth, vdisk set --description, audit filters,
# and device reset messages that are true for the device's cache mode.
# Refusals exit 1 with one precise line and change nothing.
. "$(dirname "$0")/lib.sh"
need python3

# refused REGEX ARGS...: exit 1, one stderr line matching REGEX, the audit
# log unchanged (every change writes an audit row).
refused() {
  local re=$1 rc=0 before after
  shift
  before=$(df --json audit --limit 0 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  df "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq 1 ] || fail "$*: exit $rc ($(cat "$T/err"))"
  [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$*: not one line: $(cat "$T/err")"
  grep -Eq -e "$re" "$T/err" || fail "$*: '$(cat "$T/err")' does not match /$re/"
  [ ! -s "$T/out" ] || fail "$*: printed $(cat "$T/out")"
  after=$(df --json audit --limit 0 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$before" = "$after" ] || fail "$*: refused but audited a change"
}

df init >/dev/null
truncate -s 8M "$T/d.raw"
df vdisk import base "$T/d.raw" >/dev/null
df vdisk import other "$T/d.raw" >/dev/null

# ---- collection set / remove ------------------------------------------------
df collection add lab --description "Lab PCs" --vdisk base >/dev/null
df device add pc1 --mac 52:54:00:00:00:01 --collection lab >/dev/null
df device add pc2 --mac 52:54:00:00:00:02 --collection lab --cache server-persistent >/dev/null
df farm set auto-add on --collection lab >/dev/null
json collection set lab --name lab2 --description "2nd floor" --vdisk other
jcheck "$T/j.json" "d['name'] == 'lab2'" "d['description'] == '2nd floor'" \
  "d['vdisk'] == 'other'" "d['device_count'] == 2"
json device show pc1
jcheck "$T/j.json" "d['collection'] == 'lab2'"
json farm show
jcheck "$T/j.json" "d['auto_add_collection'] == 'lab2'"
json collection set lab2 --description '' --no-vdisk
jcheck "$T/j.json" "d['description'] is None" "d['vdisk'] is None"
df collection add empty >/dev/null
refused "nothing to change"                collection set lab2
refused "no collection named 'nosuch'"     collection set nosuch --description x
refused "collection 'empty' already exists" collection set lab2 --name empty
refused "no vdisk named 'nosuch'"          collection set lab2 --vdisk nosuch
refused "exclude each other"               collection set lab2 --vdisk base --no-vdisk
refused "invalid collection name"          collection set lab2 --name ../x
refused "receives auto-added devices"      collection remove lab2 --force
df farm set auto-add off >/dev/null
refused "collection 'lab2' still has devices \(pc1, pc2\).*--force" collection remove lab2
json collection remove empty
jcheck "$T/j.json" "d['device_count'] == 0"
json collection remove lab2 --force
jcheck "$T/j.json" "d['device_count'] == 2"
json device show pc2
jcheck "$T/j.json" "d['collection'] is None"
json collection list
jcheck "$T/j.json" "d == []"
pass "collection set (rename keeps devices, auto-add follows) and remove (refused, --force)"

# ---- server set ---------------------------------------------------------------
df server add ss1 --address 10.0.0.1 >/dev/null
json server set ss1 --address 10.0.0.9 --iscsi-port 3261 --nbd-port 10810 \
  --admin-port 8002 --power 7
jcheck "$T/j.json" "d['address'] == '10.0.0.9'" "d['iscsi_port'] == 3261" \
  "d['nbd_port'] == 10810" "d['admin_port'] == 8002" "d['power'] == 7"
json server set ss1 --power 2
jcheck "$T/j.json" "d['address'] == '10.0.0.9'" "d['iscsi_port'] == 3261" "d['power'] == 2"
df --json server list --no-health >"$T/j.json"
jcheck "$T/j.json" "d[0]['power'] == 2" "d[0]['admin_port'] == 8002"
refused "nothing to change"                server set ss1
refused "no server named 'nosuch'"         server set nosuch --power 2
refused "--iscsi-port must be 1-65535"     server set ss1 --iscsi-port 70000
refused "power must be 1-1000"             server set ss1 --power 0
refused "invalid server address"           server set ss1 --address 'a b'
pass "server set: each field, others kept, bad values refused"

# ---- farm auto-merge depth, vdisk description --------------------------------
json farm set auto-merge-depth 5
jcheck "$T/j.json" "d['auto_merge_depth'] == 5"
json farm set auto_merge_depth 4
json vdisk show base
jcheck "$T/j.json" "d['auto_merge_depth'] == 4" "d['auto_merge_depth_from'] == 'farm'"
json vdisk set base --auto-merge-depth 0
json vdisk show base
jcheck "$T/j.json" "d['auto_merge_depth'] == 0" "d['auto_merge_depth_from'] == 'vdisk'"
json vdisk set base --auto-merge-depth farm --description "Windows 10 22H2"
json vdisk show base
jcheck "$T/j.json" "d['auto_merge_depth'] == 4" "d['description'] == 'Windows 10 22H2'"
json vdisk set base --description ''
jcheck "$T/j.json" "d['description'] is None"
json farm show
jcheck "$T/j.json" "d['auto_merge_depth'] == 4"
refused "auto-merge-depth must be 0 \(off\) or 2-256, not '1'" farm set auto-merge-depth 1
refused "auto-merge-depth must be"         farm set auto-merge-depth 5x
refused "unknown setting 'bogus'"          farm set bogus 1
refused "nothing to change"                vdisk set base
refused "auto-merge-depth must be"         vdisk set base --auto-merge-depth 257
refused "longer than 1024"                 vdisk set base --description "$(head -c 1100 /dev/zero | tr '\0' x)"
pass "farm set auto-merge-depth (default of vDisks without their own), vdisk set --description"

# ---- vdisk set --efi-loader --------------------------------------------------
json vdisk show base
jcheck "$T/j.json" "d['firmware'] is None" "d['efi_loader'] is None"
json vdisk set base --efi-loader '\EFI\debian\grubx64.efi'
jcheck "$T/j.json" "d['efi_loader'] == '\\\\EFI\\\\debian\\\\grubx64.efi'"
refused "EFI loader path 'EFI/x.efi' does not start with"  vdisk set base --efi-loader 'EFI/x.efi'
refused "does not end in .efi"             vdisk set base --efi-loader '\EFI\x.exe'
refused "has a character outside"          vdisk set base --efi-loader '\EFI\a b.efi'
json vdisk show base
jcheck "$T/j.json" "d['efi_loader'] == '\\\\EFI\\\\debian\\\\grubx64.efi'"
json vdisk set base --efi-loader ''
jcheck "$T/j.json" "d['efi_loader'] is None"
pass "vdisk set --efi-loader: set, bad paths refused (nothing changed), cleared"

# ---- audit filters ------------------------------------------------------------
json audit --object ss1 --limit 0
jcheck "$T/j.json" "[e['action'] for e in d] == ['server.set', 'server.set', 'server.add']"
json audit --action collection --limit 0
jcheck "$T/j.json" "len(d) >= 6" "all(e['action'].startswith('collection.') for e in d)"
json audit --action collection.remove
jcheck "$T/j.json" "sorted(e['object'] for e in d) == ['empty', 'lab2']" \
  "[e['detail'] for e in d] == [{'devices': ['pc1', 'pc2']}, {'devices': []}]"
json audit --since -1h --object pc1
jcheck "$T/j.json" "[e['action'] for e in d] == ['device.add']"
json audit --since 2099-01-01
jcheck "$T/j.json" "d == []"
json audit --since 2000-01-01T00:00:00Z --action server.add
jcheck "$T/j.json" "len(d) == 1"
refused "--since 'yesterday' is not a time" audit --since yesterday
refused "--since '-5x' is not a time"       audit --since -5x
pass "audit --object, --action (exact and family), --since (ISO 8601 and -1h)"

# ---- device reset: what happens to the writes, per cache mode ----------------
df device reset pc2 >"$T/out"
grep -q "server-persistent cache is kept" "$T/out" || fail "persistent reset: $(cat "$T/out")"
mkdir -p "$FARM/cache/pc2" && echo x >"$FARM/cache/pc2/persistent.data"
df device reset pc2 --discard >"$T/out"
grep -q "server-persistent cache was deleted" "$T/out" || fail "persistent --discard: $(cat "$T/out")"
[ ! -e "$FARM/cache/pc2/persistent.data" ] || fail "persistent.data left"
df device reset pc1 --discard >"$T/out"
grep -q "its server cache starts empty at its next boot; --discard had nothing more to delete" "$T/out" ||
  fail "server --discard: $(cat "$T/out")"
df device set pc1 --cache hypervisor >/dev/null
df device reset pc1 --discard >"$T/out"
grep -q "keeps nothing on the server" "$T/out" && grep -q "nothing to delete" "$T/out" &&
  ! grep -q "deleted" "$T/out" || fail "hypervisor reset: $(cat "$T/out")"
df device add mnt --mac 52:54:00:00:00:03 --vdisk base --type maintenance >/dev/null
df version new base >/dev/null
df device reset mnt >"$T/out"
grep -q "writes to maintenance version 1 are kept" "$T/out" || fail "maintenance reset: $(cat "$T/out")"
pass "device reset says what happens to the writes (server, persistent, hypervisor, maintenance)"
