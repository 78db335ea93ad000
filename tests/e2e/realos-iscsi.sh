#!/bin/bash
# e2e (qemu TCG, network namespaces made here): a real OS runs from the
# stream with its root on iSCSI through iBFT.  Usage: realos-iscsi.sh
# small|debian (the initramfs flavour, tests/e2e/lib/make-golden-linux.sh).
#
#   netns LAN: bridge br0 10.77.0.1, dnsmasq (site DHCP, addresses only),
#              streamsvc on .1 (iSCSI + admin; NBD on a UNIX socket for the
#              checks), tap0 + tap1 -> two qemu VMs booting at once
#   netns BS:  bootstrapsvc --address 10.77.0.11 (veth to br0)
#
# Each VM: NIC ROM iPXE -> ProxyDHCP -> HTTP boot.ipxe -> sanboot (int13
# loads syslinux, the kernel and the initramfs) -> the initramfs logs in
# again from the iBFT (iscsistart -b) -> ext4 root on /dev/sda2 -> /sbin/init
# runs the workload (boot counter, 32 MiB fsync + read back, fstrim).
#   pc01: cache `server`; pc02: cache `server-persistent`.
#   boot 1: both count 1; the OS's writes are in the device's cache (read
#           through device/<name>), not in vdisk/golden, and the store files'
#           sha256 is unchanged
#   boot 2: chained (bootstrapsvc --chain-ipxe: the ROM's iPXE loads
#           undionly.kpxe over TFTP, whose iPXE fetches the script and
#           writes the iBFT): pc01 counts 1 again (the boot script fetch
#           starts a new boot generation), pc02 counts 2 (its cache
#           survives reboots)
#   device reset: pc01's cache is clean (no counter file in the export),
#           pc02's persistent cache is kept (2); reset --discard empties it
# Every boot: no kernel I/O, SCSI or iSCSI error in the OS log.
# Skips (77) unless root with network namespaces, /dev/net/tun, qemu,
# dnsmasq, open-iscsi, nbdcopy and e2fsprogs (initramfs-tools for debian).
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
FLAVOUR=${1:-small}
case $FLAVOUR in small|debian) ;; *) e2e_fail "unknown flavour '$FLAVOUR'" ;; esac
e2e_need ip dnsmasq qemu-system-x86_64 nbdcopy debugfs e2fsck sfdisk bc
[ -f /usr/lib/ipxe/undionly.kpxe ] || e2e_skip "ipxe package missing"
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-400}
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

# ---- network ---------------------------------------------------------------
e2e_lan 10.77.0 2 1
LAN=$E2E_LAN

realos_images "$T/img" "$FLAVOUR"

# ---- farm ------------------------------------------------------------------
df init >/dev/null
df vdisk import golden "$T/img/golden-$FLAVOUR.img" >/dev/null
rm -f "$T/img/golden-$FLAVOUR.img"
df device add pc01 --mac 52:54:00:77:00:01 --vdisk golden --cache server >/dev/null
df device add pc02 --mac 52:54:00:77:00:02 --vdisk golden --cache server-persistent >/dev/null
store0=$(realos_store_sum "$FARM")
realos_lan_daemons 10.77.0

REALOS_QEMU_PREFIX="ip netns exec $LAN"
vm_start() { # NAME TAP MAC ROUND
  realos_qemu_start "$1" "$T/serial-$1-$4.log" -boot n \
    -netdev "tap,id=n0,ifname=$2,script=no,downscript=no" \
    -device "e1000,netdev=n0,mac=$3"
}
vm_wait() { # NAME ROUND
  realos_qemu_wait "$1" "$T/serial-$1-$2.log" "$BOOT_TIMEOUT" || {
    realos_dump "$T/serial-$1-$2.log"
    for f in bs ss1 dnsmasq; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
    e2e_fail "$1 boot $2 ($FLAVOUR): no workload end marker"
  }
}
export_count() { realos_cached_count "nbd+unix:///$1?socket=$T/nbd.sock"; }
boot_round() { # ROUND
  vm_start pc01 tap0 52:54:00:77:00:01 "$1"
  vm_start pc02 tap1 52:54:00:77:00:02 "$1"
  vm_wait pc01 "$1"
  vm_wait pc02 "$1"
}

# ---- boot 1 ------------------------------------------------------------------
boot_round 1
realos_check_boot "$T/serial-pc01-1.log" 1
realos_check_boot "$T/serial-pc02-1.log" 1
grep -a 'DISKFARM-ISCSI-CONN\|DISKFARM-SD' "$T/serial-pc01-1.log" | tr -d '\r' | sort -u
# iscsistart turns NOP-Outs off unless told: the small initramfs passes
# node.conn[0].timeo.noop_out_interval=5 (Debian's script does not)
if [ "$FLAVOUR" = small ]; then
  grep -aq 'DISKFARM-ISCSI-CONN .* noop_out_interval=5 ' "$T/serial-pc01-1.log" ||
    e2e_fail "the OS's iSCSI connection does not send NOP-Outs every 5 s"
fi
grep -q 'boot.ipxe for pc01' "$T/bs.log" || e2e_fail "pc01 did not fetch boot.ipxe"
[ "$(grep -c 'iSCSI login' "$T/ss1.log")" -ge 4 ] ||
  e2e_fail "expected an iPXE and an OS login per VM: $(grep 'iSCSI login' "$T/ss1.log")"
[ "$(export_count device/pc01)" = 1 ] || e2e_fail "pc01's cache does not hold its boot counter"
[ "$(export_count device/pc02)" = 1 ] || e2e_fail "pc02's cache does not hold its boot counter"
[ "$(export_count vdisk/golden)" = none ] || e2e_fail "the OS's writes reached vdisk/golden"
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
e2e_pass "$FLAVOUR: PXE -> sanboot -> iBFT login -> root on iSCSI; writes in the caches only"

# ---- boot 2: chained through undionly.kpxe -----------------------------------
# bootstrapsvc --chain-ipxe: the NIC ROM's iPXE gets undionly.kpxe over
# TFTP first, and the iBFT the OS logs in from is the chained iPXE's
kill "$REALOS_BS_PID"; wait "$REALOS_BS_PID" 2>/dev/null || true
realos_bootstrapsvc 10.77.0 "$T/bs-chain.log" --chain-ipxe
boot_round 2
realos_check_boot "$T/serial-pc01-2.log" 1
realos_check_boot "$T/serial-pc02-2.log" 2
for m in 52:54:00:77:00:01 52:54:00:77:00:02; do
  grep -q "proxydhcp: $m .* -> [^ ]*undionly.kpxe" "$T/bs-chain.log" ||
    { grep -a 'tftp\|proxydhcp' "$T/bs-chain.log"; e2e_fail "$m was not offered undionly.kpxe"; }
done
[ "$(grep -c 'tftp .*: sent undionly.kpxe' "$T/bs-chain.log")" -ge 2 ] ||
  e2e_fail "undionly.kpxe not sent over TFTP twice"
[ "$(grep -c 'boot.ipxe for pc0[12] .* new generation' "$T/bs-chain.log")" -ge 2 ] ||
  e2e_fail "the chained iPXE did not fetch boot.ipxe with a valid token"
e2e_pass "$FLAVOUR: chained undionly.kpxe -> iBFT login; server cache starts clean (1), server-persistent keeps it (2)"

df device reset pc01 >/dev/null
df device reset pc02 >/dev/null
[ "$(export_count device/pc01)" = none ] || e2e_fail "device reset left pc01's server cache in place"
[ "$(export_count device/pc02)" = 2 ] || e2e_fail "device reset lost pc02's persistent cache"
df device reset pc02 --discard >/dev/null
[ "$(export_count device/pc02)" = none ] || e2e_fail "device reset --discard left pc02's cache in place"
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
e2e_pass "$FLAVOUR: device reset: server cache clean, persistent kept; --discard empties it; store untouched"
