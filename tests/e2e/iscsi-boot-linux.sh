#!/bin/bash
# e2e (qemu TCG): a vDisk holding a Debian kernel + busybox initramfs
# (tests/e2e/lib/make-linux-disk.sh) is sanbooted by iPXE over iSCSI from
# streamsvc; syslinux loads kernel and initramfs through iPXE's int13 and
# /init prints DISKFARM-LINUX-UP on serial.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
e2e_init
e2e_need qemu-system-x86_64
e2e_need_ipxe_iso
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

rc=0; "$E2E_LIB/make-linux-disk.sh" "$T/linux.img" 64 || rc=$?
[ $rc -eq 77 ] && e2e_skip "cannot build the Linux disk"
[ $rc -eq 0 ] || e2e_fail "make-linux-disk.sh failed"
df init >/dev/null
df vdisk import linux "$T/linux.img" >/dev/null
df device add vm01 --mac 52:54:00:00:10:01 --vdisk linux >/dev/null
e2e_streamsvc_iscsi
port=$E2E_ISCSI_PORT

e2e_ipxe_iso "$T/boot.iso" "#!ipxe
dhcp
sanboot iscsi:10.0.2.2::$port:1:iqn.2026-11.org.diskfarm:vm01"
start=$(date +%s)
if ! e2e_qemu_boot "$T/serial.log" 300 DISKFARM-LINUX-UP -- -cdrom "$T/boot.iso" \
     -boot d -nic user,model=e1000,mac=52:54:00:00:10:01; then
  echo "--- serial (tail)"; tail -20 "$T/serial.log"
  e2e_fail "Linux did not come up over iSCSI"
fi
grep -m1 DISKFARM-LINUX-UP "$T/serial.log"
e2e_pass "Linux kernel + initramfs loaded over iSCSI, up in $(( $(date +%s) - start )) s"
