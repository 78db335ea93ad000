#!/bin/bash
# console: the real `diskfarm` binary on a temporary farm, checked with
# qemu-img (compare, check, info, convert) and python3's json module.
#   - raw import: stored qcow2 equals the input, is clean and sparse
#   - qcow2-with-backing import (chain flattened), VHDX import
#   - every --json output parsed and checked
#   - bad inputs: exit 1, one line on stderr, nothing changed
#   - export raw/qcow2 round trip, refusal to overwrite
. "$(dirname "$0")/lib.sh"
need qemu-img python3 sha256sum cmp

MiB=$((1024 * 1024))

# Everything a refused command must leave as it was.
snapshot() {
  df --json vdisk list
  df --json device list
  df --json collection list
  df --json audit --limit 0 | python3 -c 'import json,sys; print("audit", len(json.load(sys.stdin)))'
  (cd "$FARM" && find store cache -print 2>/dev/null | sort)
}

# ---- init --------------------------------------------------------------
json init
jcheck "$T/j.json" "d['farm'] == '$FARM'" "d['schema_version'] >= 1"
if [ -n "$DF_DB_CONF" ]; then
  [ ! -e "$FARM/farm.db" ] || fail "init on PostgreSQL made a farm.db"
else
  [ -f "$FARM/farm.db" ] || fail "init made no farm.db"
fi
df init >/dev/null || fail "second init failed"
pass "init"

# ---- raw import ----------------------------------------------------------
make_raw "$T/disk.raw" 64
df vdisk import base "$T/disk.raw" --format raw --json >"$T/j.json" 2>"$T/err" ||
  fail "raw import: $(cat "$T/err")"
[ ! -s "$T/err" ] || fail "import wrote to stderr without a terminal: $(cat "$T/err")"
STORED=$FARM/store/base/base.0.qcow2
sum=$(sha256sum "$STORED" | cut -d' ' -f1)
size=$(stat -c %s "$STORED")
jcheck "$T/j.json" "d['name'] == 'base'" "d['version'] == 0" \
  "d['virtual_size'] == 64 * $MiB" "d['sha256'] == '$sum'" \
  "d['file_size'] == $size" "d['file'] == 'base.0.qcow2'"
qemu-img compare -q -f raw -F qcow2 "$T/disk.raw" "$STORED" || fail "stored qcow2 differs from the raw input"
qemu-img check -q -f qcow2 "$STORED" || fail "qemu-img check: stored qcow2 not clean"
[ "$size" -lt $((4 * MiB)) ] || fail "stored qcow2 is not sparse: $size bytes for 64 MiB"
ls -A "$FARM/store/base" | grep -qv '^base.0.qcow2$' && fail "import left files: $(ls -A "$FARM/store/base")"
pass "raw import: equal to input, check clean, sparse ($size bytes for 64 MiB)"

# ---- qcow2 with a backing file ----------------------------------------------
qemu-img convert -q -f raw -O qcow2 "$T/disk.raw" "$T/lower.qcow2"
qemu-img create -q -f qcow2 -b lower.qcow2 -F qcow2 "$T/top.qcow2"
command -v qemu-io >/dev/null &&
  qemu-io -f qcow2 -c 'write -P 0xab 2M 128k' -c 'write -z 0 64k' "$T/top.qcow2" >/dev/null
df vdisk import layered "$T/top.qcow2" --description "layered test" >/dev/null || fail "qcow2 import"
json vdisk show layered
jcheck "$T/j.json" "d['description'] == 'layered test'"
L=$FARM/store/layered/layered.0.qcow2
qemu-img compare -q "$T/top.qcow2" "$L" || fail "layered import differs from its source chain"
qemu-img check -q "$L" || fail "layered import not clean"
qemu-img info --output=json "$L" >"$T/info.json"
jcheck "$T/info.json" "'backing-filename' not in d"
pass "qcow2 + backing import: chain flattened, equal, standalone"

# ---- VHDX through qemu-img convert ------------------------------------------
qemu-img convert -q -f raw -O vhdx "$T/disk.raw" "$T/disk.vhdx"
json vdisk import fromvhdx "$T/disk.vhdx" --format vhdx
jcheck "$T/j.json" "d['virtual_size'] == 64 * $MiB"
qemu-img compare -q -f raw -F qcow2 "$T/disk.raw" "$FARM/store/fromvhdx/fromvhdx.0.qcow2" ||
  fail "vhdx import differs"
df vdisk import autovhdx "$T/disk.vhdx" >/dev/null || fail "vhdx import with --format auto"
pass "vhdx import (explicit and auto)"

# ---- an import killed earlier leaves .import-<pid>-* behind: cleaned up ----
true & deadpid=$!; wait "$deadpid"
mkdir -p "$FARM/store/retry/.import-$deadpid-AbCdEf"
echo partial >"$FARM/store/retry/.import-$deadpid-AbCdEf/retry.0.qcow2.tmp.123456"
df vdisk import retry "$T/disk.raw" >/dev/null || fail "import after a killed import"
[ "$(ls -A "$FARM/store/retry")" = "retry.0.qcow2" ] ||
  fail "stale import directory kept: $(ls -A "$FARM/store/retry")"
df vdisk remove retry >/dev/null || fail "remove retry"
pass "stale temporary directory of a killed import removed"

# ---- vdisk list / show -------------------------------------------------------
json vdisk list
jcheck "$T/j.json" "isinstance(d, list)" \
  "sorted(v['name'] for v in d) == ['autovhdx', 'base', 'fromvhdx', 'layered']" \
  "all(v['virtual_size'] == 64 * $MiB and v['version_count'] == 1 for v in d)" \
  "[v for v in d if v['name'] == 'base'][0]['stored_size'] == $size"
df vdisk list >"$T/out"
grep -Eq '^base +1 +0 +64\.0 MiB' "$T/out" || fail "human vdisk list: $(cat "$T/out")"
json vdisk show base
jcheck "$T/j.json" "d['name'] == 'base'" "d['virtual_size'] == 64 * $MiB" \
  "len(d['versions']) == 1" "d['versions'][0]['version'] == 0" \
  "d['versions'][0]['sha256'] == '$sum'" "d['versions'][0]['file_size'] == $size" \
  "d['versions'][0]['state'] == 'production'" \
  "d['versions'][0]['file'] == 'base.0.qcow2'" \
  "len(d['chain']) == 1 and d['chain'][0]['format'] == 'qcow2'" \
  "d['chain'][0]['backing'] is None" "d['extent_count'] >= 1" \
  "d['chain_error'] is None"
df vdisk show base >"$T/out"
grep -q "$sum" "$T/out" && grep -q "Backing chain" "$T/out" || fail "human vdisk show: $(cat "$T/out")"
pass "vdisk list/show (json + table)"

# ---- export round trip ----------------------------------------------------------
json vdisk export base "$T/out.raw" --format raw
jcheck "$T/j.json" "d['version'] == 0" "d['format'] == 'raw'" "d['virtual_size'] == 64 * $MiB"
cmp "$T/disk.raw" "$T/out.raw" || fail "raw export differs from the import source"
df vdisk export base@0 "$T/out.qcow2" --format qcow2 >/dev/null || fail "qcow2 export"
qemu-img compare -q -f raw -F qcow2 "$T/disk.raw" "$T/out.qcow2" || fail "qcow2 export differs"
qemu-img check -q "$T/out.qcow2" || fail "exported qcow2 not clean"
pass "export raw (byte-identical) and qcow2 (compare + check clean)"

# ---- collections and devices ------------------------------------------------
json collection add lab --description "Lab PCs" --vdisk base
jcheck "$T/j.json" "d['name'] == 'lab'" "d['vdisk'] == 'base'" "d['description'] == 'Lab PCs'"
json device add pc1 --mac 52:54:00:12:34:56 --vdisk base --cache ram:256 \
  --collection lab --quota 1G
jcheck "$T/j.json" "d['name'] == 'pc1'" "d['mac'] == '52:54:00:12:34:56'" \
  "d['cache_mode'] == 'ram:256'" "d['quota'] == 1024 ** 3" "d['type'] == 'production'" \
  "d['collection'] == 'lab'" "d['vdisk'] == 'base'"
json device add pc2 --mac 52-54-00-AB-CD-EF --collection lab --type test
jcheck "$T/j.json" "d['mac'] == '52:54:00:ab:cd:ef'" "d['vdisk'] == 'base'" \
  "d['type'] == 'test'" "d['cache_mode'] == 'server'" "d['quota'] == 0"
json device add solo --mac 5254.0000.0099 --vdisk layered
json device show 52:54:00:ab:cd:ef
jcheck "$T/j.json" "d['name'] == 'pc2'" "d['boot_version'] == 0" \
  "d['cache_dir'].endswith('/cache/pc2')"
json device list
jcheck "$T/j.json" "sorted(x['name'] for x in d) == ['pc1', 'pc2', 'solo']"
json device list --collection lab
jcheck "$T/j.json" "sorted(x['name'] for x in d) == ['pc1', 'pc2']"
json collection show lab
jcheck "$T/j.json" "d['device_count'] == 2" "len(d['devices']) == 2" \
  "{x['mac'] for x in d['devices']} == {'52:54:00:12:34:56', '52:54:00:ab:cd:ef'}"
json collection list
jcheck "$T/j.json" "d == [dict(d[0], name='lab', device_count=2, vdisk='base')]"
df device list >"$T/out"
grep -Eq '^pc1 +52:54:00:12:34:56 +base +production +ram:256 +1\.0 GiB +lab' "$T/out" ||
  fail "human device list: $(cat "$T/out")"
pass "collections and devices (json + table)"

json device set pc2 --cache server-persistent --quota 512M --type production
jcheck "$T/j.json" "d['cache_mode'] == 'server-persistent'" "d['quota'] == 512 * $MiB" \
  "d['type'] == 'production'" "d['mac'] == '52:54:00:ab:cd:ef'"
json device set pc2 --collection '' --quota none
jcheck "$T/j.json" "d['collection'] is None" "d['quota'] == 0"
pass "device set"

json device show pc2
gen=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["generation"])' "$T/j.json")
json device reset pc2
jcheck "$T/j.json" "d['generation'] == $gen + 1" "d['discarded'] is False"
mkdir -p "$FARM/cache/pc2"
echo data >"$FARM/cache/pc2/persistent.data"
echo map >"$FARM/cache/pc2/persistent.map"
json device reset 52:54:00:ab:cd:ef --discard
jcheck "$T/j.json" "d['generation'] == $gen + 2" "d['discarded'] is True"
[ ! -e "$FARM/cache/pc2/persistent.data" ] && [ ! -e "$FARM/cache/pc2/persistent.map" ] ||
  fail "reset --discard left the persistent cache: $(ls "$FARM/cache/pc2")"
df device reset pc2 | grep -q "boot generation $((gen + 3))" || fail "human reset output"
pass "device reset (generation $gen -> $((gen + 3)), --discard deletes persistent files)"

# ---- bad inputs: exit 1, one line, nothing changed -------------------------
printf 'QFI\373garbage-not-a-real-header' >"$T/corrupt.qcow2"
truncate -s 1M "$T/corrupt.qcow2"
touch "$T/exists.raw"
bad "unknown vdisk"        "nosuch"          device add x1 --mac 52:54:00:00:00:01 --vdisk nosuch
bad "duplicate MAC"        "mac|exists|use"  device add x2 --mac 52:54:00:12:34:56 --vdisk base
bad "duplicate MAC (other spelling)" "mac|exists|use" device add x2 --mac 5254.0012.3456 --vdisk base
bad "duplicate name"       "pc1|exists"      device add pc1 --mac 52:54:00:00:00:02 --vdisk base
bad "malformed MAC"        "mac"             device add x3 --mac 52:54:00:12:34 --vdisk base
bad "malformed MAC (hex)"  "mac"             device add x3 --mac zz:54:00:12:34:56 --vdisk base
bad "missing --mac"        "missing --mac.*see 'diskfarm device add --help'" device add x4 --vdisk base
bad "bad cache mode"       "cache|bogus"     device add x5 --mac 52:54:00:00:00:05 --vdisk base --cache bogus
bad "bad ram cache size"   "ram|cache"       device add x5 --mac 52:54:00:00:00:05 --vdisk base --cache ram:lots
bad "bad quota"            "size|quota"      device add x6 --mac 52:54:00:00:00:06 --vdisk base --quota 12Q
bad "negative quota"       "size|quota"      device add x6 --mac 52:54:00:00:00:06 --vdisk base --quota -1
bad "bad type"             "type"            device add x7 --mac 52:54:00:00:00:07 --vdisk base --type gold
bad "unknown collection"   "nosuch"          device add x8 --mac 52:54:00:00:00:08 --vdisk base --collection nosuch
bad "bad device name"      "name"            device add ../x --mac 52:54:00:00:00:09 --vdisk base
bad "set: duplicate MAC"   "mac|exists|use"  device set pc2 --mac 52:54:00:12:34:56
bad "set: unknown vdisk"   "nosuch"          device set pc2 --vdisk nosuch
bad "set: bad cache"       "cache|bogus"     device set pc2 --cache bogus
bad "set: nothing"         "nothing to change.*--help" device set pc2
bad "unknown device"       "nosuch"          device show nosuch
bad "reset unknown device" "nosuch"          device reset nosuch
bad "list: unknown collection" "nosuch"      device list --collection nosuch
bad "missing file"         "no such file"    vdisk import newdisk "$T/does-not-exist.raw"
bad "import: existing name" "exists"         vdisk import base "$T/disk.raw"
bad "import: corrupt qcow2" "."              vdisk import broken "$T/corrupt.qcow2"
bad "import: bad format"   "format"          vdisk import newdisk "$T/disk.raw" --format floppy
bad "import: bad name"     "name"            vdisk import ../evil "$T/disk.raw"
bad "unknown vdisk show"   "nosuch"          vdisk show nosuch
bad "unknown version"      "7|version"       vdisk export base@7 "$T/v7.raw" --format raw
bad "bad version ref"      "version"         vdisk export base@x "$T/vx.raw" --format raw
bad "export over a file"   "exists"          vdisk export base "$T/exists.raw" --format raw
bad "export without format" "format.*--help" vdisk export base "$T/new.raw"
bad "remove used vdisk"    "base|use|device|busy" vdisk remove base
bad "unknown collection show" "nosuch"       collection show nosuch
bad "duplicate collection" "lab|exists"      collection add lab
bad "collection: unknown vdisk" "nosuch"     collection add lab2 --vdisk nosuch
bad "unknown option"       "unknown option.*see 'diskfarm device list --help'" device list --bogus
bad "missing argument"     "missing FILE.*see 'diskfarm vdisk import --help'" vdisk import onlyname
bad "extra argument"       "unexpected.*--help" vdisk show base extra
bad "unknown command"      "unknown command.*see 'diskfarm --help'" frobnicate
bad "unknown subcommand"   "unknown command.*see 'diskfarm vdisk --help'" vdisk frobnicate
bad "missing subcommand"   "missing command.*see 'diskfarm device --help'" device
[ ! -e "$T/v7.raw" ] && [ ! -e "$T/new.raw" ] && [ ! -s "$T/exists.raw" ] || fail "refused export wrote a file"
rc=0; "$DISKFARM" --farm "$T/nofarm" vdisk list >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && [ ! -e "$T/nofarm/farm.db" ] ||
  fail "missing farm: rc $rc, $(cat "$T/err")"
pass "missing farm -> $(cat "$T/err")"

# ---- remove ----------------------------------------------------------------------
json audit --limit 0
n_audit=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/j.json")
json device remove pc1
jcheck "$T/j.json" "d['name'] == 'pc1'"
json device list
jcheck "$T/j.json" "sorted(x['name'] for x in d) == ['pc2', 'solo']"
json vdisk remove fromvhdx
[ ! -e "$FARM/store/fromvhdx" ] || fail "vdisk remove left $(ls -A "$FARM/store/fromvhdx")"
json vdisk list
jcheck "$T/j.json" "'fromvhdx' not in [v['name'] for v in d]"
pass "device remove, vdisk remove (store files deleted)"

# ---- audit --------------------------------------------------------------------
json audit --limit 0
jcheck "$T/j.json" "len(d) >= $n_audit + 2" \
  "all(set(e) == {'id', 'at', 'who', 'action', 'object', 'detail'} for e in d)" \
  "any(e['object'] == 'pc1' for e in d)" "any(e['object'] == 'fromvhdx' for e in d)"
json audit --limit 2
jcheck "$T/j.json" "len(d) == 2"
pass "audit ($n_audit entries before the removals)"

# ---- help at every level ---------------------------------------------------------
for cmd in "" "vdisk" "vdisk import" "vdisk export" "device" "device add" \
           "device reset" "collection" "collection show" "audit" "init"; do
  # shellcheck disable=SC2086
  "$DISKFARM" $cmd --help >"$T/out" 2>&1 || fail "diskfarm $cmd --help failed"
  grep -q "Example" "$T/out" && grep -q "Usage:" "$T/out" ||
    fail "diskfarm $cmd --help: $(cat "$T/out")"
done
pass "--help at every level"

echo "console: all checks passed"
