#!/bin/bash
# streamsvc against NBD clients nobody here wrote: qemu-img, qemu-io,
# nbdinfo, nbdcopy, nbdsh.
. "$TESTS_SRCDIR/lib.sh"
need qemu-img qemu-io nbdinfo nbdcopy nbdsh

make_raw "$T/disk.raw" 64
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk golden >/dev/null
start_streamsvc

# qemu-img info / compare / convert on the read-only vdisk export
qemu-img info "$(uri vdisk/golden)" | grep -q 'virtual size: 64 MiB' || fail "qemu-img info size"
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri vdisk/golden)" || fail "compare vdisk"
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri vdisk/golden@0)" || fail "compare vdisk@0"
qemu-img convert -f raw -O qcow2 "$(uri vdisk/golden)" "$T/conv.qcow2"
qemu-img compare "$T/disk.raw" "$T/conv.qcow2" || fail "convert result differs"
pass "qemu-img info/compare/convert"

# a read-only export refuses writes
if qemu-io -f raw -c 'write 0 4k' "$(uri vdisk/golden)" 2>"$T/err"; then
  grep -qi 'error\|denied\|read-only' "$T/err" || fail "write to vdisk export accepted"
fi
pass "vdisk export is read-only"

# qemu-io writes through the device cache, unaligned and FUA included
qemu-io -f raw -c 'write -P 0x5a 1000 70000' -c 'write -f -P 0x11 1M 64k' \
  -c 'write -z 2M 1M' -c 'discard 3M 1M' -c flush "$(uri device/pc01)" >/dev/null
qemu-io -f raw -c 'read -P 0x5a 1000 70000' -c 'read -P 0x11 1M 64k' \
  -c 'read -P 0 2M 1M' "$(uri device/52:54:00:00:00:01)" | grep -q 'read 70000/70000' ||
  fail "qemu-io read-back"
pass "qemu-io write/read/zero/discard/FUA through device cache"

# nbdinfo --list shows vdisks only; --map shows allocation
nbdinfo --list "nbd+unix://?socket=$SOCK" >"$T/list"
grep -q 'export="vdisk/golden"' "$T/list" || fail "vdisk not listed"
grep -q 'device/' "$T/list" && fail "device export listed"
nbdinfo --map "$(uri vdisk/golden)" >"$T/map"
grep -q 'hole,zero' "$T/map" || fail "no hole in map"
grep -q 'data' "$T/map" || fail "no data in map"
pass "nbdinfo --list / --map"

# nbdcopy the whole vdisk and a device
nbdcopy "$(uri vdisk/golden)" "$T/copy.raw"
cmp "$T/disk.raw" "$T/copy.raw" || fail "nbdcopy vdisk differs"
nbdcopy "$(uri device/pc01)" "$T/dev.raw"
cmp -s "$T/disk.raw" "$T/dev.raw" && fail "device copy should differ from base"
pass "nbdcopy"

# nbdsh: flags, structured replies, block status, out-of-range error
nbdsh -u "$(uri device/pc01)" -c '
import errno
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero()
assert not h.can_multi_conn(), "device exports must not advertise multi-conn"
assert not h.is_read_only()
buf = h.pread(4096, 1000)
assert buf == b"\x5a" * 4096
try:
    h.pread(512, h.get_size())
    raise SystemExit("read beyond end accepted")
except nbd.Error as e:
    assert e.errnum in (errno.EINVAL, errno.ENOSPC), e
' || fail "nbdsh device checks"
nbdsh --base-allocation -u "$(uri vdisk/golden)" -c '
assert h.is_read_only()
assert h.can_meta_context("base:allocation")
ents = []
h.block_status(h.get_size(), 0, lambda ctx, off, e, err: ents.extend(e))
assert len(ents) >= 4 and sum(ents[0::2]) == h.get_size(), ents
' || fail "nbdsh vdisk checks"
pass "nbdsh"
