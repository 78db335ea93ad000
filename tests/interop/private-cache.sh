#!/bin/bash
# private-cache: cache mode private (PVS's Private Image) end to end with
# real clients.  The device writes its own permanent layer over the
# version it was first served; the layer survives streamsvc restarts (also
# kill -9 after a flush) and `device reset`; a new production version does
# not move it; `device export` writes base + layer as one standalone image,
# compared with an image built independently by qemu-io on a local copy;
# `device reset --discard` deletes it and the next boot pins anew.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io nbdinfo curl python3

init_vdisk vd 16 # data at 0, 1M, 7M; zero at 3M
json device add priv --mac 52:54:00:00:00:41 --vdisk vd --cache private
jcheck "$T/j.json" 'd["cache_mode"] == "private"'
df device add ctl --mac 52:54:00:00:00:42 --vdisk vd >/dev/null
df device add mnt --mac 52:54:00:00:00:43 --vdisk vd --type maintenance >/dev/null
for bad in private:1 Private privatex; do
  df device add bad --mac 52:54:00:00:00:44 --vdisk vd --cache "$bad" \
    2>"$T/bad.err" && fail "cache mode $bad accepted"
  grep -q "unknown cache mode \"$bad\"" "$T/bad.err" ||
    fail "message for $bad: $(cat "$T/bad.err")"
done
df device show bad >/dev/null 2>&1 && fail "a refused device add left a device"
pass "device add --cache private (malformed spellings refused)"

# The expected image, built without diskfarm: the same writes by qemu-io.
cp "$T/base.raw" "$T/expect.raw"
expect() {
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f raw "${args[@]}" "$T/expect.raw" >/dev/null || fail "qemu-io expect $*"
}
W1=("write -P 0xa1 2M 64k" "write -P 0xa2 9M 4k" "write -z 7M 64k")
W2=("write -P 0xa3 12M 1k" "write -P 0xa4 1M 3000")
expect "${W1[@]}"
expect "${W2[@]}"

start_streamsvc
qio device/priv "${W1[@]}" "flush"
for f in private.base private.data private.map; do
  [ -f "$FARM/cache/priv/$f" ] || fail "no $f in the device's cache dir"
done
grep -qx "version=0" "$FARM/cache/priv/private.base" ||
  fail "pin: $(cat "$FARM/cache/priv/private.base")"
pass "writes over NBD; private.base pins vd v0"

# Restart (TERM), then more writes, flush, and kill -9.
stop_streamsvc
start_streamsvc
qio device/priv "read -P 0xa1 2M 64k" "read -P 0 7M 64k" "${W2[@]}" "flush"
stop_streamsvc KILL
start_streamsvc
qemu-img compare -f raw -F raw "$(uri device/priv)" "$T/expect.raw" \
  >"$T/cmp.out" 2>&1 || { cat "$T/cmp.out"; fail "device/priv after restarts"; }
pass "streamsvc restart and kill -9 after FLUSH: device/priv == expected image"

# device reset: a private image is never reset.
df device reset priv >"$T/reset.out" || fail "device reset priv"
grep -q "its private image is kept (--discard deletes it); a private image is never reset: it stays on vd v0" \
  "$T/reset.out" || fail "reset output: $(cat "$T/reset.out")"
qemu-img compare -f raw -F raw "$(uri device/priv)" "$T/expect.raw" \
  >"$T/cmp.out" 2>&1 || { cat "$T/cmp.out"; fail "device/priv after reset"; }
pass "device reset keeps the private image ($(cat "$T/reset.out"))"

# A new production version (0x5a at 3M) reaches ctl, not priv.
json version new vd
qio device/mnt "write -P 0x5a 3M 64k" "flush"
json version seal vd
json version promote vd 1 --to production
df device reset priv >/dev/null
df device reset ctl >/dev/null
qio device/ctl "read -P 0x5a 3M 64k"
qio device/priv "read -P 0 3M 64k"
qemu-img compare -f raw -F raw "$(uri device/priv)" "$T/expect.raw" \
  >"$T/cmp.out" 2>&1 || { cat "$T/cmp.out"; fail "device/priv after promotion"; }
grep -qx "version=0" "$FARM/cache/priv/private.base" || fail "pin moved"
json version list vd --admin 127.0.0.1:1
jcheck "$T/j.json" '"priv" in [v for v in d if v["version"] == 0][0]["devices"]' \
  '"priv" not in [v for v in d if v["version"] == 1][0]["devices"]' \
  '"ctl" in [v for v in d if v["version"] == 1][0]["devices"]'
pass "v1 in production: ctl sees it, priv stays on v0 (version list says so)"

# Export: refused while the device has a live session (the server named),
# and while streamsvc holds the image without one; nothing written.
qemu-io -r -f raw -c "read 0 64k" -c "sleep 3000" "$(uri device/priv)" >/dev/null 2>&1 &
holder=$!
wait_live priv
admin_curl -sf "http://$ADMIN/v1/sessions" >"$T/s.json" || fail "/v1/sessions"
grep -q '"device/priv"' "$T/s.json" || fail "no live session of priv: $(cat "$T/s.json")"
df device export priv "$T/held.raw" --admin "$ADMIN" 2>"$T/held.err" &&
  fail "device export accepted during a live session"
grep -q "device 'priv' is live on .*stop it first" "$T/held.err" ||
  fail "live-session message: $(cat "$T/held.err")"
[ -e "$T/held.raw" ] && fail "a refused export left a file"
wait $holder || fail "qemu-io holder"
pass "device export refused during a live session ($(cat "$T/held.err"))"
df device export priv "$T/live.raw" --admin "$ADMIN" 2>"$T/live.err" &&
  fail "device export accepted while streamsvc holds the image"
grep -q "device 'priv' is live" "$T/live.err" || fail "live message: $(cat "$T/live.err")"
[ -e "$T/live.raw" ] && fail "a refused export left a file"
ls "$T" | grep -q 'live.raw.tmp' && fail "a refused export left a temp file"
df device export ctl "$T/ctl.raw" 2>"$T/ctl.err" && fail "export of a server-cache device"
grep -q "no private image" "$T/ctl.err" || fail "ctl message: $(cat "$T/ctl.err")"
pass "device export refused while live ($(cat "$T/live.err")) and for a non-private device"

stop_streamsvc
df device export priv "$T/out.raw" >"$T/exp.out" || fail "device export raw"
qemu-img compare -f raw -F raw "$T/out.raw" "$T/expect.raw" ||
  fail "exported raw != expected image"
json device export priv "$T/out.qcow2"
jcheck "$T/j.json" 'd["format"] == "qcow2"' 'd["virtual_size"] == 16 << 20'
qemu-img check -q "$T/out.qcow2" || fail "qemu-img check out.qcow2"
qemu-img info --output=json "$T/out.qcow2" >"$T/info.json"
jcheck "$T/info.json" '"backing-filename" not in d' 'd["format"] == "qcow2"'
qemu-img compare -f qcow2 -F raw "$T/out.qcow2" "$T/expect.raw" ||
  fail "exported qcow2 != expected image"
df device export priv "$T/out.raw" 2>/dev/null && fail "export overwrote a file"
df device export priv "$T/out.vmdk" 2>"$T/fmt.err" && fail "export to .vmdk without --format"
grep -q "format" "$T/fmt.err" || fail "format message: $(cat "$T/fmt.err")"
pass "device export: raw and qcow2 (qemu-img check clean) equal the expected image"

# Another vdisk: the private image does not follow; the open says why.
make_raw "$T/other.raw" 8
df vdisk import vd2 "$T/other.raw" >/dev/null
df device set priv --vdisk vd2 >/dev/null
start_streamsvc
nbdinfo "$(uri device/priv)" >"$T/o.out" 2>&1 && fail "private image over vd opened for vd2"
grep -q "private image over vdisk vd v0" "$T/o.out" "$T/streamsvc.log" ||
  fail "vdisk change message: $(cat "$T/o.out")"
df device set priv --vdisk vd >/dev/null
qio device/priv "read -P 0xa1 2M 64k"
pass "device set --vdisk: the private image is refused for another vdisk, back on vd it serves"

# device reset --discard: explicit deletion; the next open pins v1.
stop_streamsvc
df device reset priv --discard >"$T/reset.out" || fail "device reset --discard"
grep -q "its private image was deleted" "$T/reset.out" || fail "output: $(cat "$T/reset.out")"
ls "$FARM/cache/priv" | grep -q private && fail "private files left: $(ls "$FARM/cache/priv")"
start_streamsvc
qio device/priv "read -P 0x5a 3M 64k" "read -P 0 2M 64k"
grep -qx "version=1" "$FARM/cache/priv/private.base" || fail "new pin: $(cat "$FARM/cache/priv/private.base")"
pass "device reset --discard deletes the image; the next boot pins v1"

# A vdisk rename keeps the image (the pin names the version file by its
# SHA-256); export still works, and version delete refuses its version.
qio device/priv "write -P 0xb1 2M 4k" "flush"
stop_streamsvc
df vdisk rename vd vdr >/dev/null || fail "vdisk rename"
start_streamsvc
qio device/priv "read -P 0xb1 2M 4k" "read -P 0x5a 3M 64k"
stop_streamsvc
df device export priv "$T/renamed.raw" >/dev/null || fail "export after rename"
qemu-io -f raw -c "read -P 0xb1 2M 4k" "$T/renamed.raw" | grep -q "read 4096" ||
  fail "export after rename lacks the write"
pass "vdisk rename: the private image stays served and exportable"
