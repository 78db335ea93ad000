#!/bin/bash
# bad-input-console: input every program must refuse with one precise line
# (never a crash), leaving the farm as it was (vdisk, device, server,
# collection lists, the audit log and the files of store/ and cache/).
#   - empty or blank option values (diskfarm, streamsvc, bootstrapsvc)
#   - broadcast, multicast and all-zero MACs
#   - device names differing only in case (iSCSI names are case-insensitive)
#   - server addresses that are neither IP literals nor RFC 1123 names
#   - vDisks that are not whole 512-byte sectors
#   - quotas below one cache block, ram: sizes the engine refuses
#   - sizes in qemu-img syntax accepted where a size is
#   - messages never cut a UTF-8 character in half
. "$(dirname "$0")/lib.sh"
need python3

snapshot() {
  df --json vdisk list
  df --json device list
  df --json server list --no-health
  df --json collection list
  df --json audit --limit 0 | python3 -c 'import json,sys; print("audit", len(json.load(sys.stdin)))'
  (cd "$FARM" && find store cache -print 2>/dev/null | sort)
}

# bad_prog LABEL REGEX PROG-NAME BINARY ARGS...: a daemon or tool refuses
# its command line with one line and exit 1 or 2 (never a signal).
bad_prog() {
  local label=$1 re=$2 name=$3 bin=$4 rc=0 before after
  shift 4
  before=$(snapshot)
  timeout 10 "$bin" "$@" >"$T/out" 2>"$T/err" || rc=$?
  { [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; } || fail "$label: exit status $rc ($(cat "$T/err"))"
  one_line "$label" "$re" "$name" "$T/err"
  after=$(snapshot)
  [ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "$label: farm changed"; }
  pass "$label -> $(cat "$T/err")"
}

df init >/dev/null
head -c $((4 * 1024 * 1024)) /dev/zero >"$T/disk.raw"
df vdisk import base "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk base >/dev/null
df server add ss1 --address 127.0.0.1 >/dev/null
df collection add lab --vdisk base >/dev/null

# ---- empty option values: one line, no SIGSEGV ---------------------------
rc=0
"$DISKFARM" --farm '' init >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] || fail "diskfarm --farm '' init: exit status $rc ($(cat "$T/err"))"
one_line "diskfarm --farm '' init" "option --farm: empty value" diskfarm "$T/err"
pass "diskfarm --farm '' init -> $(cat "$T/err")"
[ ! -e farm.db ] || fail "--farm '' created farm.db in the current directory"
bad "--farm blank" "option --farm: empty value" --farm ' ' device list
bad "device list --farm ''" "option --farm: empty value" device list --farm ''
bad "device add --mac ''" "option --mac: empty value" device add pc09 --mac '' --vdisk base
bad "device add --vdisk ''" "option --vdisk: empty value" device add pc09 --mac 52:54:00:00:00:09 --vdisk ''
bad "device set --quota ''" "option --quota: empty value" device set pc01 --quota ''
bad "device set --cache ' '" "option --cache: empty value" device set pc01 --cache ' '
bad "server add --address ''" "option --address: empty value" server add ss9 --address ''
bad "vdisk import --format ''" "option --format: empty value" vdisk import v9 "$T/disk.raw" --format ''
bad_prog "bootstrapsvc --farm ''" "option --farm: empty value" bootstrapsvc "$BOOTSTRAPSVC" --farm '' --address 127.0.0.1
bad_prog "bootstrapsvc --address ''" "option --address: empty value" bootstrapsvc "$BOOTSTRAPSVC" --farm "$FARM" --address ''
bad_prog "streamsvc --farm ''" "option --farm: empty value" streamsvc "$STREAMSVC" --farm ''
bad_prog "streamsvc --config ''" "option --config: empty value" streamsvc "$STREAMSVC" --config ''
# (no farm: a streamsvc that took the empty address would stop at the farm
# check before binding anything)
bad_prog "streamsvc --nbd-listen ''" "option --nbd-listen: empty value" streamsvc "$STREAMSVC" --farm "$T/nofarm" --nbd-listen ''
# '' still clears a collection
df device set pc01 --collection lab >/dev/null
json device set pc01 --collection ''
jcheck "$T/j.json" "d['collection'] is None"
pass "device set --collection '' clears the collection"

# ---- MACs that are no device's ---------------------------------------------
bad "broadcast MAC" "MAC address ff:ff:ff:ff:ff:ff is the broadcast address" \
  device add pc09 --mac ff:ff:ff:ff:ff:ff --vdisk base
bad "multicast MAC" "MAC address 01:00:5e:00:00:fb is a multicast address" \
  device add pc09 --mac 01-00-5E-00-00-FB --vdisk base
bad "all-zero MAC" "MAC address 00:00:00:00:00:00 is all zeros" \
  device add pc09 --mac 000000000000 --vdisk base
bad "set broadcast MAC" "broadcast" device set pc01 --mac FFFF.FFFF.FFFF

# ---- device names are case-insensitive -----------------------------------
bad "device add PC01 beside pc01" "device 'PC01' already exists as 'pc01'" \
  device add PC01 --mac 52:54:00:00:00:02 --vdisk base
json device show PC01
jcheck "$T/j.json" "d['name'] == 'pc01'"
json device set Pc01 --type test
jcheck "$T/j.json" "d['name'] == 'pc01'" "d['type'] == 'test'"
pass "device show/set PC01 find pc01"

# ---- server addresses --------------------------------------------------------
bad "server address 999.1.1.1" "invalid server address '999.1.1.1': not a valid IPv4 address" \
  server add ss9 --address 999.1.1.1
bad "server address 10.0.0" "not a valid IPv4 address" server add ss9 --address 10.0.0
bad "server address with _" "character '_' is not allowed" server add ss9 --address ss_9.lan
bad "server address label -" "starts or ends with '-'" server add ss9 --address ss9-.lan
bad "server address ::g" "not a valid IPv6 address" server add ss9 --address ::g
df server add ss2 --address ss2.example.lan >/dev/null || fail "host name refused"
df server add ss3 --address fd00::3 >/dev/null || fail "IPv6 literal refused"
pass "server add takes host names and IPv6 literals"

# ---- vDisks are whole sectors ------------------------------------------------
printf 'abcdef' >"$T/six.raw"
bad "6-byte vdisk" "disk size 6 bytes is not a multiple of 512" vdisk import six "$T/six.raw"
head -c 1000 /dev/zero >"$T/odd.raw"
bad "1000-byte vdisk" "not a multiple of 512" vdisk import odd "$T/odd.raw" --format raw
: >"$T/empty.raw"
bad "empty vdisk" "is empty" vdisk import empty "$T/empty.raw"

# ---- quotas and ram: sizes ---------------------------------------------------
bad "quota 100" "quota 100 bytes is below one cache block \(4096 bytes\)" device set pc01 --quota 100
bad "quota 4095B" "below one cache block" device set pc01 --quota 4095B
bad "quota 1.5" "invalid size '1.5': a fraction needs a unit" device set pc01 --quota 1.5
bad "quota -1G" "invalid size '-1G'" device set pc01 --quota -1G
bad "quota 1X" "unknown unit suffix" device set pc01 --quota 1X
bad "quota 16E" "too large" device set pc01 --quota 16E
bad "ram above 1 TiB" "above the maximum" device set pc01 --cache ram:1048577
bad "ram 2T" "above the maximum" device set pc01 --cache ram:2T
bad "ram 512K" "at least 1 MiB" device set pc01 --cache ram:512K
for q in 1.5G:1610612736 4096M:4294967296 512K:524288 1T:1099511627776 \
         4096:4096 8192B:8192; do
  json device set pc01 --quota "${q%%:*}"
  jcheck "$T/j.json" "d['quota'] == ${q##*:}"
done
json device set pc01 --cache ram:1.5G
jcheck "$T/j.json" "d['cache_mode'] == 'ram:1536'"
json device set pc01 --cache ram:512
jcheck "$T/j.json" "d['cache_mode'] == 'ram:512'"
pass "sizes in qemu-img syntax: --quota 1.5G/4096M/512K/1T/4096/8192B, ram:1.5G, ram:512"

# ---- messages stay valid UTF-8 ------------------------------------------------
long=$(python3 -c 'print("\u00e9" * 200)')
bad "long UTF-8 device name" "invalid device name '.*\.\.\.': must be 1 to 63" \
  device add "$long" --mac 52:54:00:00:00:09 --vdisk base
bad "UTF-8 character in a name" "character 'é' not allowed" \
  device add "pcé" --mac 52:54:00:00:00:09 --vdisk base
