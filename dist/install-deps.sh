#!/bin/sh
# Install the Debian 12 packages diskfarm needs to build, test or demo.
# Usage: dist/install-deps.sh [build|test|demo]...   (default: build)
# Installs only what is missing; runs apt-get update at most once.
set -eu

build_pkgs="meson ninja-build pkg-config gcc libglib2.0-dev libjson-glib-dev
  libsoup-3.0-dev libsqlite3-dev libpq-dev libssl-dev libbsd-dev zlib1g-dev
  libisofs-dev libvirt-dev libxml2-dev libguestfs-dev libnbd-dev"
# boot: what e2e tests and the demo need to build boot media and disks and
# to boot them under qemu (TCG)
boot_pkgs="qemu-utils qemu-system-x86 ipxe isolinux syslinux syslinux-common
  xorriso busybox-static mtools dosfstools e2fsprogs"
# libguestfs (vdisk inspect, version diff) needs a kernel for its appliance;
# vdisk inspect decompresses initramfs images with zstd / xz
guestfs_pkgs="libguestfs-dev libguestfs-tools linux-image-amd64 zstd xz-utils"
# a real OS from the stream (e2e realos-*): golden images whose initramfs
# logs in to iSCSI from the iBFT (iscsistart) or attaches NBD (nbd-client),
# Debian's own initramfs built with mkinitramfs, ext4 roots by mkfs.ext4 -d
realos_pkgs="open-iscsi initramfs-tools nbd-client e2fsprogs cpio kmod bc"
# UEFI (e2e realos-uefi): OVMF firmware for qemu q35, and systemd's EFI
# stub the golden image's unified kernel image is built on (objcopy)
uefi_pkgs="ovmf systemd-boot-efi binutils"
# openssl (the command): nbd-tls makes its x509 CA and certificates at test
# time; the client side of TLS is qemu's and libnbd's (GnuTLS)
# keepalived: the floating iSCSI portal of each stream server (VRRP, e2e
# portal-failover and the interop portal-config test run their own
# instances with private config and pid files, never the system service)
# postgresql: the farm DB tests start their own server from its initdb and
# pg_ctl (tests/lib/pg.sh), never the system service
test_pkgs="$boot_pkgs $guestfs_pkgs postgresql libnbd-bin python3 python3-libnbd nbdkit
  fio curl libiscsi-bin tgt clang libclang-rt-14-dev procps bc valgrind
  libxml2-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  tftp-hpa tftpd-hpa dnsmasq-base iproute2 qemu-block-extra genisoimage fdisk
  libnbd-dev libiscsi-dev mmdebstrap debhelper lintian $realos_pkgs
  $uefi_pkgs openssl keepalived"
demo_pkgs="$boot_pkgs libnbd-bin python3 python3-libnbd curl linux-image-amd64 fdisk
  $realos_pkgs"

want=""
[ $# -eq 0 ] && set -- build
for what in "$@"; do
  case "$what" in
    build) want="$want $build_pkgs" ;;
    test) want="$want $build_pkgs $test_pkgs" ;;
    demo) want="$want $build_pkgs $demo_pkgs" ;;
    *) echo "install-deps: unknown set '$what' (build, test, demo)" >&2; exit 2 ;;
  esac
done

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages:$missing; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# tftpd-hpa's package starts a daemon on port 69; the benchmark runs its own
# tftpd-hpa and the tests their own servers, so keep the system one off.
case " $missing " in
  *" tftpd-hpa "*)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now tftpd-hpa >/dev/null 2>&1 || true
    else
      service tftpd-hpa stop >/dev/null 2>&1 || true
    fi ;;
esac
# keepalived's package starts the system daemon on its (empty) config; the
# tests run their own keepalived in their network namespaces.
case " $missing " in
  *" keepalived "*)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now keepalived >/dev/null 2>&1 || true
    else
      service keepalived stop >/dev/null 2>&1 || true
    fi ;;
esac
# open-iscsi's package enables iscsid (socket-activated) and open-iscsi.service,
# which would log in to whatever the host's node database holds; the e2e
# tests run their initiators inside qemu guests, so keep the host's off.
case " $missing " in
  *" open-iscsi "*)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now iscsid.socket iscsid.service open-iscsi.service \
        >/dev/null 2>&1 || true
    else
      service open-iscsi stop >/dev/null 2>&1 || true
      service iscsid stop >/dev/null 2>&1 || true
    fi ;;
esac
