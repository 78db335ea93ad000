#!/bin/bash
# e2e (qemu TCG): an ISO of Debian's isolinux + ipxe.lkrn + an iPXE script
# sanboots device pc01 from streamsvc over iSCSI, reaching the target by
# MAC (${net0/mac:hexhyp}).  The test MBR in the vDisk reads LBA 1 and
# writes LBA 2 through int13 and prints markers on serial.  Then: the
# write is in pc01's cache, the vDisk is untouched, pc02 still sees the
# base.  Needs: qemu-system-x86_64, xorriso, isolinux, ipxe, binutils.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
e2e_init
e2e_need qemu-img qemu-system-x86_64 python3
e2e_need_ipxe_iso
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

e2e_make_test_disk "$T/disk.img" DFLBA1-ISCSI 16
df init >/dev/null
df vdisk import golden "$T/disk.img" >/dev/null
df device add pc01 --mac 52:54:00:12:34:56 --vdisk golden --cache server >/dev/null
df device add pc02 --mac 52:54:00:12:34:57 --vdisk golden --cache server >/dev/null
e2e_streamsvc_iscsi
port=$E2E_ISCSI_PORT

e2e_ipxe_iso "$T/boot.iso" "#!ipxe
dhcp
set initiator-iqn iqn.2026-11.org.diskfarm.test:\${net0/mac:hexhyp}
sanboot iscsi:10.0.2.2::$port:1:iqn.2026-11.org.diskfarm:\${net0/mac:hexhyp}"

if ! e2e_qemu_boot "$T/serial.log" 180 DFMBR-DONE -- -cdrom "$T/boot.iso" -boot d \
     -nic user,model=e1000,mac=52:54:00:12:34:56; then
  echo "--- serial"; cat "$T/serial.log"; echo "--- streamsvc"; tail -20 "$T/streamsvc.log"
  e2e_fail "no DFMBR-DONE on serial"
fi
grep -q 'DFMBR-LBA1 DFLBA1-ISCSI' "$T/serial.log" || e2e_fail "int13 read wrong: $(cat "$T/serial.log")"
grep -q 'DFMBR-LBA2 DFMBR-WRITTEN' "$T/serial.log" || e2e_fail "int13 write not read back"
grep -q 'iSCSI login: .* -> iqn.2026-11.org.diskfarm:52-54-00-12-34-56' "$T/streamsvc.log" \
  || e2e_fail "no login by MAC in the log"

uri() { echo "nbd+unix:///$1?socket=$T/nbd.sock"; }
qemu-img convert -f raw -O raw "$(uri device/pc01)" "$T/pc01.raw"
dd if="$T/pc01.raw" bs=512 skip=2 count=1 status=none | grep -q DFMBR-WRITTEN \
  || e2e_fail "the int13 write is not in pc01's cache"
qemu-img compare -q -f raw -F raw "$T/disk.img" "$(uri vdisk/golden)" \
  || e2e_fail "the vDisk changed"
qemu-img compare -q -f raw -F raw "$T/disk.img" "$(uri device/pc02)" \
  || e2e_fail "pc02 does not see the base"
e2e_pass "iPXE sanboot over iSCSI: int13 read+write, write in pc01's cache only"
