#!/bin/bash
# Device A's writes are invisible to device B and to the vdisk export;
# store files are byte-identical before and after.
. "$TESTS_SRCDIR/lib.sh"
need qemu-io qemu-img sha256sum

make_raw "$T/disk.raw" 32
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add a --mac 52:54:00:00:00:0a --vdisk golden --cache server >/dev/null
df device add b --mac 52:54:00:00:00:0b --vdisk golden --cache ram:8 >/dev/null
df device add c --mac 52:54:00:00:00:0c --vdisk golden --cache server-persistent >/dev/null
before=$(cd "$FARM/store" && find . -type f -exec sha256sum {} + | sort)
start_streamsvc

qemu-io -f raw -c 'write -P 0xaa 0 4M' "$(uri device/a)" >/dev/null
qemu-io -f raw -c 'write -P 0xbb 2M 4M' "$(uri device/b)" >/dev/null
qemu-io -f raw -c 'write -P 0xcc 1M 1M' -c flush "$(uri device/c)" >/dev/null

qemu-io -f raw -c 'read -P 0xaa 0 4M' "$(uri device/a)" | grep -q 'read 4194304' || fail "a lost its data"
qemu-io -f raw -c 'read -P 0xbb 2M 4M' "$(uri device/b)" | grep -q 'read 4194304' || fail "b lost its data"
qemu-io -f raw -c 'read -P 0xcc 1M 1M' "$(uri device/c)" | grep -q 'read 1048576' || fail "c lost its data"
# b's first 2 MiB and c outside its range still read the base
qemu-img convert -f raw -O raw "$(uri device/b)" "$T/b.raw"
cmp -n 2097152 "$T/disk.raw" "$T/b.raw" || fail "b sees someone else's writes"
qemu-img convert -f raw -O raw "$(uri device/c)" "$T/c.raw"
cmp -n 1048576 "$T/disk.raw" "$T/c.raw" || fail "c sees someone else's writes"
qemu-img compare -f raw -F raw "$T/disk.raw" "$(uri vdisk/golden)" || fail "vdisk export changed"
stop_streamsvc
after=$(cd "$FARM/store" && find . -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "store files changed"
pass "isolation between devices, vdisk and store"
