#!/bin/bash
# e2e (qemu TCG): the three BDM media boot a target through iPXE to its
# vDisk over iSCSI: `bdm iso` (CD), `bdm partition` (raw disk), and a qcow2
# template with an existing partition after `bdm inject`.  The first
# bootstrap server of the script is a closed port, so each boot also proves
# the failover to the direct iSCSI sanboot (target by MAC).  The test MBR
# prints DFMBR-LBA1 <marker> (int13 read) and DFMBR-LBA2 (write read back).
# iSCSI target: streamsvc --iscsi-listen.
#
# `boot-media.sh realos`: the same three media boot a real OS instead
# (tests/e2e/lib/make-golden-linux.sh, small initramfs): iPXE's sanboot
# loads syslinux, the kernel and the initramfs through int13, the
# initramfs logs in again from the iBFT (the portal 10.0.2.2, user
# networking) and runs the ext4 root from the device's target; its
# workload runs to its end marker with a clean OS log (no kernel I/O, SCSI
# or iSCSI error), and afterwards the boot counter it wrote is in that
# device's cache (read through device/<name>), not in vdisk/golden, and
# the store files are unchanged.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
MODE=${1:-mbr}
case $MODE in mbr|realos) ;; *) e2e_fail "unknown mode '$MODE' (mbr, realos)" ;; esac
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
BDM=${BDM:?BDM not set}
e2e_init
e2e_need qemu-img qemu-system-x86_64 python3 sfdisk
for f in /usr/lib/ISOLINUX/isolinux.bin /usr/lib/ipxe/ipxe.lkrn /usr/lib/syslinux/mbr/mbr.bin; do
  [ -f "$f" ] || e2e_skip "$f missing"
done
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }
MACS="52:54:00:bd:00:01 52:54:00:bd:00:02 52:54:00:bd:00:03"
hexhyp() { echo "$1" | tr : -; }

target=streamsvc
df init >/dev/null
if [ "$MODE" = realos ]; then
  e2e_need nbdcopy debugfs e2fsck bc
  realos_images "$T/img" small
  df vdisk import golden "$T/img/golden-small.img" >/dev/null
  rm -f "$T/img/golden-small.img"
else
  e2e_make_test_disk "$T/disk.img" DFLBA1-BDM 16
  df vdisk import golden "$T/disk.img" >/dev/null
fi
store0=$(realos_store_sum "$FARM")
n=1
for m in $MACS; do
  df device add "bdm0$n" --mac "$m" --vdisk golden --cache server >/dev/null
  n=$((n + 1))
done
e2e_streamsvc_iscsi
port=$E2E_ISCSI_PORT
closed=$(e2e_free_port)     # nothing listens there: bootstrap failover
opts="--server 10.0.2.2:$closed --iscsi-port $port"

# realos_boot NAME MAC QEMU-ARGS...: the real OS runs from device bdm0N
# (by its MAC) to the workload's end; its counter is in its cache only.
realos_boot() {
  local name=$1 mac=$2 dev; shift 2
  dev=$(df --json device list | python3 -c '
import json, sys
print([d["name"] for d in json.load(sys.stdin) if d["mac"] == sys.argv[1]][0])' "$mac")
  realos_qemu_start "$name" "$T/$name.log" "$@" -nic "user,model=e1000,mac=$mac"
  realos_qemu_wait "$name" "$T/$name.log" 300 || {
    realos_dump "$T/$name.log"; tail -20 "$T/streamsvc.log"
    e2e_fail "$name: no workload end marker"
  }
  realos_check_boot "$T/$name.log" 1
  [ "$(realos_cached_count "nbd+unix:///device/$dev?socket=$T/nbd.sock")" = 1 ] ||
    e2e_fail "$name: the boot counter is not in $dev's cache"
  e2e_pass "$name: a real OS runs its root on iSCSI through the iBFT ($dev's target); its writes are in $dev's cache"
}

boot() { # NAME MAC QEMU-ARGS...
  if [ "$MODE" = realos ]; then realos_boot "$@"; return; fi
  local name=$1 mac=$2 t0 t1; shift 2
  t0=$(date +%s.%N)
  if ! e2e_qemu_boot "$T/$name.log" 240 DFMBR-DONE -- "$@" \
       -nic "user,model=e1000,mac=$mac"; then
    echo "--- serial ($name)"; cat "$T/$name.log"
    [ -f "$T/streamsvc.log" ] && { echo "--- streamsvc"; tail -20 "$T/streamsvc.log"; }
    e2e_fail "$name: no DFMBR-DONE on serial"
  fi
  t1=$(date +%s.%N)
  grep -q 'DFMBR-LBA1 DFLBA1-BDM' "$T/$name.log" || e2e_fail "$name: int13 read wrong"
  grep -q 'DFMBR-LBA2 DFMBR-WRITTEN' "$T/$name.log" || e2e_fail "$name: int13 write not read back"
  e2e_pass "$name boots through iPXE -> $target iSCSI ($(hexhyp "$mac")) in $(python3 -c "print(round($t1-$t0,1))") s"
}
set -- $MACS

"$BDM" iso "$T/boot.iso" $opts
boot iso "$1" -cdrom "$T/boot.iso" -boot d

"$BDM" partition "$T/boot.img" $opts
boot partition "$2" -drive "file=$T/boot.img,format=raw,if=ide" -boot c

if command -v guestfish >/dev/null 2>&1; then
  export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
  export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
  qemu-img create -q -f raw "$T/tpl.raw" 64M
  echo 'start=2048, size=32M, type=83, bootable' | sfdisk -q "$T/tpl.raw"
  qemu-img convert -O qcow2 "$T/tpl.raw" "$T/tpl.qcow2"
  "$BDM" inject "$T/tpl.qcow2" $opts >/dev/null || e2e_fail "bdm inject"
  boot inject "$3" -drive "file=$T/tpl.qcow2,format=qcow2,if=ide" -boot c
else
  echo "SKIP: inject boot (libguestfs tools not installed)"
fi
if [ "$target" = streamsvc ]; then
  for m in $MACS; do
    grep -q "iSCSI login: .* -> iqn.2026-11.org.diskfarm:$(hexhyp "$m")" "$T/streamsvc.log" ||
      e2e_fail "no streamsvc login for $m"
  done
fi
if [ "$MODE" = realos ]; then
  [ "$(realos_cached_count "nbd+unix:///vdisk/golden?socket=$T/nbd.sock")" = none ] ||
    e2e_fail "the OS's writes reached vdisk/golden"
  [ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
  e2e_pass "realos: vdisk/golden and the store files untouched"
fi
