#!/bin/bash
# vdisk rename: one DB transaction, nothing moves on disk.  The renamed
# vDisk is served under its new name with the same bytes (qemu-io over
# NBD), its devices keep booting it, a session opened before the rename
# keeps reading, new versions land in the same store directory, every
# version file still passes qemu-img check and its recorded SHA-256; a new
# vDisk under the old name gets its own store directory and leaves the
# renamed one's files alone.  Refusals change nothing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io python3 sha256sum

init_vdisk win10 16
df vdisk set win10 --auto-merge-depth 4 >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk win10 >/dev/null
df device add mnt --mac 52:54:00:00:00:02 --vdisk win10 --type maintenance >/dev/null
df collection add lab --vdisk win10 >/dev/null
start_streamsvc

df version new win10 >/dev/null
qio device/mnt "write -P 0x61 3M 1M" "flush"
rc=0; df vdisk rename win10 win10-22h2 2>"$T/err" || rc=$?
[ "$rc" = 1 ] && grep -q "has maintenance version 1: seal or delete it" "$T/err" ||
  fail "rename with a maintenance version: rc $rc, $(cat "$T/err")"
df version seal win10 >/dev/null
df version promote win10 1 --to production >/dev/null
(cd "$FARM/store/win10" && sha256sum win10.*.qcow2) >"$T/sums"

# sessions opened before the rename: the vdisk export, and a production
# device writing to its server cache; both keep working well past the
# fence checker's period (a rename is not a change of the device's vDisk)
python3 - "$SOCK" >"$T/held.out" 2>&1 <<'PY' &
import nbd, sys, time
v = nbd.NBD()
v.connect_uri("nbd+unix:///vdisk/win10?socket=" + sys.argv[1])
d = nbd.NBD()
d.connect_uri("nbd+unix:///device/pc01?socket=" + sys.argv[1])
d.pwrite(b"\x77" * 4096, 6 * 1024 * 1024)
print("open", flush=True)
time.sleep(3)
print("read", v.pread(4, 3 * 1024 * 1024).hex(), flush=True)
d.pwrite(b"\x78" * 4096, 6 * 1024 * 1024 + 4096)
d.flush()
print("device", d.pread(4, 6 * 1024 * 1024).hex(),
      d.pread(4, 6 * 1024 * 1024 + 4096).hex(), flush=True)
PY
HELD=$!
for _ in $(seq 50); do grep -q open "$T/held.out" && break; sleep 0.1; done
grep -q open "$T/held.out" || { cat "$T/held.out"; fail "held session did not open"; }

json vdisk rename win10 win10-22h2
jcheck "$T/j.json" "d['name'] == 'win10-22h2'" "d['old_name'] == 'win10'" \
  "d['store'] == '$FARM/store/win10'"
wait "$HELD" || { cat "$T/held.out"; fail "held session failed"; }
grep -q "read 61616161" "$T/held.out" || { cat "$T/held.out"; fail "held session read"; }
grep -q "device 77777777 78787878" "$T/held.out" || { cat "$T/held.out"; fail "held device session"; }
if grep -q "fenced" "$T/streamsvc.log"; then
  cat "$T/streamsvc.log"; fail "the rename fenced a session"
fi
pass "rename refused with a maintenance version; sessions open across the rename keep working"

(cd "$FARM/store/win10" && sha256sum -c --quiet "$T/sums") || fail "store files changed"
qio vdisk/win10-22h2 "read -P 0x61 3M 1M"
qio vdisk/win10-22h2@0 "read -P 0 3M 1M"
qio device/pc01 "read -P 0x61 3M 1M"
if qemu-io -r -f raw -c "read 0 512" "$(uri vdisk/win10)" >/dev/null 2>&1; then
  fail "the old export name still opens"
fi
json device show pc01
jcheck "$T/j.json" "d['vdisk'] == 'win10-22h2'"
json collection show lab
jcheck "$T/j.json" "d['vdisk'] == 'win10-22h2'"
json vdisk show win10-22h2
jcheck "$T/j.json" "d['auto_merge_depth'] == 4" "d['auto_merge_depth_from'] == 'vdisk'"
df vdisk verify win10-22h2 >/dev/null || fail "verify after the rename"
json audit --object win10 --action vdisk.rename
jcheck "$T/j.json" "len(d) == 1" "d[0]['detail'] == {'name': 'win10-22h2'}"
pass "same bytes under the new name, devices and collection follow, files untouched"

# a new version after the rename: same store directory, a chain that opens
df version new win10-22h2 >/dev/null
qio device/mnt "write -P 0x62 5M 1M" "flush"
df version seal win10-22h2 >/dev/null
ls "$FARM/store/win10/win10-22h2.2.qcow2" >/dev/null || fail "version 2 not in the store dir"
(cd "$FARM/store/win10" && qemu-img check -q win10-22h2.2.qcow2 &&
  qemu-img info --backing-chain win10-22h2.2.qcow2 | grep -q 'image: win10.1.qcow2') ||
  fail "version 2's backing chain"
qio vdisk/win10-22h2@2 "read -P 0x61 3M 1M" "read -P 0x62 5M 1M"
df vdisk verify win10-22h2 >/dev/null || fail "verify with version 2"
pass "versions sealed after the rename land in the same store directory"

# the old name is free again: a new vDisk gets its own store directory
make_raw "$T/other.raw" 8
json vdisk import win10 "$T/other.raw"
json vdisk show win10
jcheck "$T/j.json" "d['store'] == '$FARM/store/win10~2'"
(cd "$FARM/store/win10" && sha256sum -c --quiet "$T/sums") || fail "renamed vdisk's files changed"
qio vdisk/win10 "read -P 0 3M 1M"
qio vdisk/win10-22h2 "read -P 0x61 3M 1M"
pass "a new vDisk under the old name gets store/win10~2"

before=$(df --json audit --limit 0 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
for args in "win10-22h2 win10|already exists" "nosuch x|no vdisk named 'nosuch'" \
            "win10 ../x|invalid vdisk name" "win10 win10|already has that name"; do
  rc=0; df vdisk rename ${args%|*} >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "${args#*|}" "$T/err" ||
    fail "rename ${args%|*}: rc $rc, $(cat "$T/err")"
done
after=$(df --json audit --limit 0 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$before" = "$after" ] || fail "a refused rename changed the farm"
pass "refused renames: one line each, nothing changed"

# removing the renamed vDisk deletes its own directory, not the new one's
df device remove pc01 >/dev/null
df device remove mnt >/dev/null
df collection remove lab >/dev/null
df vdisk remove win10-22h2 >/dev/null
[ ! -e "$FARM/store/win10" ] || fail "vdisk remove left $(ls -A "$FARM/store/win10")"
qio vdisk/win10 "read -P 0 3M 1M"
df vdisk verify win10 >/dev/null || fail "the other vdisk's files were touched"
pass "vdisk remove after a rename deletes its store directory (lock file included)"
