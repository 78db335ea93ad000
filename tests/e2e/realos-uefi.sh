#!/bin/bash
# e2e (qemu TCG, q35, OVMF, network namespaces made here): a real OS boots
# under UEFI from the stream with its root on iSCSI through iBFT.
#
#   netns LAN: bridge br0 10.78.0.1, dnsmasq (site DHCP, addresses only),
#              streamsvc on .1 (iSCSI + admin; NBD on a UNIX socket for the
#              checks), tap0 -> one qemu VM (q35, OVMF)
#   netns BS:  bootstrapsvc --address 10.78.0.11 (veth to br0)
#
# The VM: OVMF's own PXE (virtio-net without an option ROM, so no iPXE in
# the NIC) -> ProxyDHCP answers client arch 7 with ipxe.efi -> TFTP ->
# ipxe.efi's DHCP -> HTTP boot.ipxe -> sanboot (iPXE's EFI SAN block device;
# the firmware starts \EFI\BOOT\BOOTX64.EFI from the ESP: a unified kernel
# image) -> the initramfs logs in again from the iBFT iPXE installed as an
# ACPI table -> ext4 root on /dev/sda2 -> /sbin/init runs the workload.
#   cache `server`; boot 1 counts 1 and its writes are in device/pc01 only
#   (vdisk/golden and the store files untouched); `vdisk inspect` (libguestfs)
#   records that the image boots under UEFI only; boot 2 with the vDisk's
#   EFI loader set (the script then runs `sanboot --filename
#   \EFI\BOOT\BOOTX64.EFI` after its ${platform} check), through qemu's
#   EFI NIC ROM iPXE instead (efi-virtio.rom: its DHCP says iPXE, ProxyDHCP
#   gives the script URL, no ipxe.efi), counts 1 again.
# Usage: realos-uefi.sh [pxe|http].  http: UEFI HTTP boot instead (OVMF's
# PXE turned off through fw_cfg opt/org.tianocore/IPv4PXESupport and
# IPv6PXESupport): DHCP vendor class HTTPClient, arch 16 -> ProxyDHCP offers
# http://10.78.0.11:80/ipxe.efi with HTTPClient echoed -> OVMF fetches it
# from bootstrapsvc's HTTP server -> the same path from ipxe.efi on; one boot.
# Prints the power-on to end-marker time of each boot.
# Skips (77) unless root with network namespaces, /dev/net/tun, qemu,
# dnsmasq, OVMF (ovmf), the EFI stub (systemd-boot-efi), open-iscsi,
# nbdcopy and e2fsprogs.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
MODE=${1:-pxe}
case $MODE in pxe|http) ;; *) e2e_fail "unknown mode '$MODE' (pxe, http)" ;; esac
[ "$(id -u)" = 0 ] || e2e_skip "needs root (network namespaces, tap)"
e2e_need ip dnsmasq qemu-system-x86_64 nbdcopy debugfs e2fsck sfdisk bc curl
[ -c /dev/net/tun ] || e2e_skip "no /dev/net/tun"
[ -f /usr/lib/ipxe/ipxe.efi ] || e2e_skip "ipxe package missing"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f $OVMF_CODE ] && [ -f $OVMF_VARS ] || e2e_skip "ovmf missing"
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-420}
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

realos_images "$T/img" --firmware uefi small

NS=dfue$$
LAN=${NS}lan BS=${NS}bs
ip netns add "$LAN" 2>/dev/null || e2e_skip "cannot create network namespaces"
ip netns add "$BS"
cleanup_ns() {
  local rc=$?
  set +e
  e2e_cleanup
  for n in "$LAN" "$BS"; do ip netns del "$n" 2>/dev/null; done
  exit "$rc"
}
trap cleanup_ns EXIT
in_lan() { ip netns exec "$LAN" "$@"; }

# ---- network ---------------------------------------------------------------
in_lan ip link set lo up
in_lan ip link add br0 type bridge
in_lan ip addr add 10.78.0.1/24 dev br0
in_lan ip link set br0 up
in_lan ip tuntap add tap0 mode tap
in_lan ip link set tap0 master br0 up
ip link add vb1 netns "$LAN" type veth peer name eth0 netns "$BS"
in_lan ip link set vb1 master br0 up
ip netns exec "$BS" ip link set lo up
ip netns exec "$BS" ip addr add 10.78.0.11/24 dev eth0
ip netns exec "$BS" ip link set eth0 up
ip netns exec "$LAN" dnsmasq --no-daemon --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range=10.78.0.100,10.78.0.150,255.255.255.0,10m --no-resolv \
  --no-hosts --user=root --dhcp-leasefile="$T/leases" --log-dhcp >"$T/dnsmasq.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"

# ---- farm ------------------------------------------------------------------
df init >/dev/null
df vdisk import golden "$T/img/golden-small-uefi.img" >/dev/null
rm -f "$T/img/golden-small-uefi.img"
df device add pc01 --mac 52:54:00:78:00:01 --vdisk golden --cache server >/dev/null
df bootstrap sync >/dev/null
df server add ss1 --address 10.78.0.1 --admin-port 8001 --iscsi-port 3260 >/dev/null
[ -z "$(find "$FARM" -perm /o+w)" ] || e2e_fail "the farm has world-writable entries"
store0=$(realos_store_sum "$FARM")

ip netns exec "$LAN" "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/nbd.sock" \
  --iscsi-listen 10.78.0.1:3260 --admin-listen 10.78.0.1:8001 >"$T/ss1.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
e2e_wait_log "$T/ss1.log" 'iscsi listening' "streamsvc did not start"
ip netns exec "$BS" "$BOOTSTRAPSVC" --farm "$FARM" --address 10.78.0.11 \
  --interface eth0 --health-interval 500 >"$T/bs.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
e2e_wait_log "$T/bs.log" 'is now healthy' "bootstrapsvc not healthy"

REALOS_QEMU_PREFIX="ip netns exec $LAN"
vm_boot() { # ROUND [ROM]: ROM: the NIC's own option ROM (qemu's efi-virtio.rom: iPXE)
  local log=$T/serial-pc01-$1.log rom=romfile=,
  [ "${2:-}" = ROM ] && rom=
  cp "$OVMF_VARS" "$T/vars-$1.fd"
  local http=()
  [ "$MODE" = http ] && http=(-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n
                              -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=n)
  realos_qemu_start pc01 "$log" -M q35 -m 512 "${http[@]}" \
    -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
    -drive "if=pflash,format=raw,file=$T/vars-$1.fd" \
    -netdev "tap,id=n0,ifname=tap0,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:78:00:01,${rom}bootindex=1"
  realos_qemu_wait pc01 "$log" "$BOOT_TIMEOUT" || {
    realos_dump "$log"
    for f in bs ss1 dnsmasq; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
    e2e_fail "pc01 UEFI boot $1: no workload end marker"
  }
}
export_count() { realos_cached_count "nbd+unix:///$1?socket=$T/nbd.sock"; }

# ---- boot 1 ------------------------------------------------------------------
vm_boot 1
realos_check_boot "$T/serial-pc01-1.log" 1
if [ "$MODE" = http ]; then
  grep -q 'proxydhcp: 52:54:00:78:00:01 offer (arch 16, HTTPClient) -> http://10.78.0.11:80/ipxe.efi' "$T/bs.log" ||
    { grep proxydhcp "$T/bs.log"; e2e_fail "OVMF's HTTP boot was not offered ipxe.efi over HTTP"; }
  grep -q '(arch 7) -> ipxe.efi' "$T/bs.log" && e2e_fail "OVMF booted over PXE, not HTTP"
else
  grep -q 'proxydhcp: 52:54:00:78:00:01 .*(arch 7) -> ipxe.efi' "$T/bs.log" ||
    { grep proxydhcp "$T/bs.log"; e2e_fail "OVMF's PXE was not answered with ipxe.efi (arch 7)"; }
fi
grep -q 'boot.ipxe for pc01' "$T/bs.log" || e2e_fail "pc01 did not fetch boot.ipxe"
[ "$(grep -c 'iSCSI login' "$T/ss1.log")" -ge 2 ] ||
  e2e_fail "expected an iPXE and an OS login: $(grep 'iSCSI login' "$T/ss1.log")"
[ "$(export_count device/pc01)" = 1 ] || e2e_fail "pc01's cache does not hold its boot counter"
[ "$(export_count vdisk/golden)" = none ] || e2e_fail "the OS's writes reached vdisk/golden"
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
e2e_pass "UEFI ($MODE): OVMF $MODE boot -> ipxe.efi -> sanboot -> UKI -> iBFT login -> root on iSCSI; writes in the cache only"
[ "$MODE" = http ] && exit 0

# ---- inspect: firmware --------------------------------------------------------
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
df --json vdisk inspect golden >"$T/inspect.json" 2>"$T/inspect.err" ||
  { cat "$T/inspect.err"; e2e_fail "vdisk inspect golden failed"; }
grep -q '"firmware" *: *"uefi"' "$T/inspect.json" ||
  { cat "$T/inspect.json"; e2e_fail "vdisk inspect does not say the GPT image boots under UEFI only"; }
grep -q 'no BIOS boot code' "$T/inspect.err" || e2e_fail "vdisk inspect did not warn about BIOS"
df vdisk show golden | grep -q 'boots under: *uefi' || e2e_fail "the firmware is not stored on the vDisk"
df vdisk set golden --efi-loader '\EFI\BOOT\BOOTX64.EFI' >/dev/null
# without a token: no new boot generation, nothing else changes
ip netns exec "$BS" curl -sf "http://10.78.0.11:80/boot.ipxe?mac=52:54:00:78:00:01" -o "$T/script" ||
  e2e_fail "cannot fetch the boot script"
grep -q '^iseq ${platform} efi || goto wrong_firmware$' "$T/script" &&
  grep -qF 'sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.78.0.1::3260:1:' "$T/script" ||
  { cat "$T/script"; e2e_fail "the script does not check the firmware or pass the EFI loader"; }
e2e_pass "UEFI: vdisk inspect records uefi; the script checks \${platform} and sanboots --filename"

# ---- boot 2: the NIC ROM's iPXE ---------------------------------------------------
# qemu's efi-virtio.rom: OVMF runs the NIC's own iPXE (EFI), whose DHCP
# says iPXE: ProxyDHCP gives it the script URL at once (no ipxe.efi)
n0=$(grep -c '(arch 7) -> ipxe.efi' "$T/bs.log" || true)
vm_boot 2 ROM
realos_check_boot "$T/serial-pc01-2.log" 1
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
grep -q 'proxydhcp: 52:54:00:78:00:01 .*(arch 7, iPXE) -> http://10.78.0.11:80/boot.ipxe' "$T/bs.log" ||
  { grep proxydhcp "$T/bs.log"; e2e_fail "the NIC ROM's iPXE was not given the script URL"; }
[ "$(grep -c '(arch 7) -> ipxe.efi' "$T/bs.log" || true)" = "$n0" ] ||
  e2e_fail "boot 2 went through OVMF's PXE and ipxe.efi, not the NIC ROM's iPXE"
grep -a 'Booting from SAN' "$T/serial-pc01-2.log" | tr -d '\r' | head -2
e2e_pass "UEFI: second boot (NIC ROM iPXE, sanboot --filename): server cache starts clean (1); store untouched"
