#!/bin/bash
# README: make-golden-linux.sh [--firmware bios|uefi] OUTDIR [FLAVOUR...]:
#   Linux golden images whose
#   OS takes the streamed disk over (root on iSCSI through iBFT, or on NBD),
#   built from Debian's packages without loop mounts or root-only tricks.
#   FLAVOUR (default: small): `small` (an initramfs assembled here: the
#   kernel's modules resolved with modprobe --show-depends, iscsistart and
#   nbd-client with their ldd libraries, busybox; see its /init below) or
#   `debian` (Debian's own initramfs-tools + open-iscsi with ISCSI_AUTO=true
#   and nbd-client's hook, built by mkinitramfs with a private config dir so
#   the host's /etc/initramfs-tools is untouched).
#   Writes, for each FLAVOUR: OUTDIR/golden-FLAVOUR.img (MBR, partition 1:
#   FAT boot with syslinux, the kernel and initrd-FLAVOUR, cmdline root on
#   /dev/sda2; partition 2: ext4 root made by mkfs.ext4 -d), and
#   OUTDIR/initrd-FLAVOUR.  With --firmware uefi the image is
#   OUTDIR/golden-FLAVOUR-uefi.img instead: GPT, partition 1 an EFI System
#   Partition (FAT, mtools) holding \EFI\BOOT\BOOTX64.EFI, a unified kernel
#   image (systemd-boot-efi's linuxx64.efi.stub with .osrel, .cmdline,
#   .linux and .initrd sections added by objcopy: bookworm has no ukify),
#   partition 2 the same ext4 root.  Plus OUTDIR/vmlinuz (for a direct NBD boot:
#   root=/dev/nbd0p2 nbdroot=HOST:PORT/EXPORT ip=dhcp, both flavours) and
#   OUTDIR/build-times (seconds per step).  Kernel cmdline no_timer_check:
#   under TCG on a loaded host the kernel's IO-APIC timer check fails now and
#   then ("IO-APIC + timer doesn't work!", a panic at 0.07 s).
#   The root is busybox-static; its /sbin/init runs the workload: appends a
#   line to /var/boot-count, writes 32 MiB with fsync, drops the page cache,
#   reads it back and compares SHA-256, removes it, fstrim, prints the
#   kernel's disk/iSCSI/NBD lines, then powers off.  Serial (ttyS0) markers:
#     DISKFARM-ROOT-UP <release> <root device>
#     DISKFARM-BOOT-COUNT=<n>
#     DISKFARM-WORKLOAD-OK sha=<sha256>  (or DISKFARM-WORKLOAD-BAD ...)
#     DISKFARM-FSTRIM <fstrim output>    (or DISKFARM-FSTRIM-FAILED ...)
#     DISKFARM-ISCSI-CONN <conn> noop_out_interval=<s> noop_out_timeout=<s>
#     DISKFARM-SD <h:c:t:l> provisioning_mode=... cache_type=... (sd's view)
#     DISKFARM-KLOG <dmesg line>         (lines matching I/O error, iscsi,
#                                         connection error, reset, nbd, sd)
#     DISKFARM-WORKLOAD-END
#   The small initramfs prints DISKFARM-INITRD-FAIL <why> and powers off
#   when it cannot find its root; without an iBFT and nbdroot it loads
#   ata_piix and mounts root from a local IDE disk (the hypervisor cache
#   mode: a qcow2 overlay whose backing is the device export).
#   Kernel: the newest installed linux-image with /boot/vmlinuz-V and
#   /lib/modules/V (or $DF_KERNEL_VERSION).  Exit 77 when a tool is missing.
set -eu
FIRMWARE=bios
case ${1:-} in
  --firmware) FIRMWARE=${2:-}; shift 2 ;;
  --firmware=*) FIRMWARE=${1#--firmware=}; shift ;;
esac
case $FIRMWARE in
  bios|uefi) ;;
  *) echo "make-golden-linux: unknown firmware '$FIRMWARE' (bios, uefi)" >&2; exit 2 ;;
esac
out=${1:?usage: make-golden-linux.sh [--firmware bios|uefi] OUTDIR [small|debian]...}
shift
[ $# -gt 0 ] || set -- small
MBR=/usr/lib/syslinux/mbr/mbr.bin
BUSYBOX=/bin/busybox
ROOT_MIB=96         # ext4 root: 32 MiB workload + busybox + journal
BOOT_MIB=63         # FAT boot: kernel + the Debian initramfs (~30 MiB)
need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/sbin/$t" ] || [ -x "/usr/sbin/$t" ] ||
      { echo "make-golden-linux: $t missing" >&2; exit 77; }
  done
}
need mkfs.fat mcopy syslinux sfdisk cpio gzip mkfs.ext4 modprobe ldd
EFI_STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
if [ "$FIRMWARE" = uefi ]; then
  need objcopy mmd
  [ -f $EFI_STUB ] || { echo "make-golden-linux: $EFI_STUB missing (systemd-boot-efi)" >&2; exit 77; }
fi
for f in $MBR $BUSYBOX; do
  [ -f $f ] || { echo "make-golden-linux: $f missing" >&2; exit 77; }
done
"$BUSYBOX" --list 2>/dev/null | grep -qx switch_root ||
  { echo "make-golden-linux: $BUSYBOX is not busybox-static" >&2; exit 77; }
for fl in "$@"; do
  case $fl in
    small) need iscsistart nbd-client ;;
    debian) need mkinitramfs iscsistart nbd-client
            [ -f /usr/share/initramfs-tools/hooks/iscsi ] ||
              { echo "make-golden-linux: open-iscsi's initramfs hook missing" >&2; exit 77; } ;;
    *) echo "make-golden-linux: unknown flavour '$fl' (small, debian)" >&2; exit 2 ;;
  esac
done
PATH=$PATH:/sbin:/usr/sbin

kver=${DF_KERNEL_VERSION:-}
if [ -z "$kver" ]; then
  for d in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V -r); do
    v=$(basename "$d")
    [ -r "/boot/vmlinuz-$v" ] && [ -f "$d/modules.dep" ] && { kver=$v; break; }
  done
fi
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] ||
  { echo "make-golden-linux: no kernel with modules (install linux-image-amd64)" >&2; exit 77; }

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$out/build-times"
step_start=0
step() { step_start=$(date +%s.%N); }
step_end() { echo "$1 $(echo "$(date +%s.%N) - $step_start" | bc | sed 's/^\./0./')" >>"$out/build-times"; }

# ---- the root filesystem (busybox + the workload init) ----------------------
step
r=$tmp/root
mkdir -p "$r"/bin "$r"/sbin "$r"/dev "$r"/proc "$r"/sys "$r"/run "$r"/tmp "$r"/var "$r"/etc
cp "$BUSYBOX" "$r/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || [ "$a" = init ] || ln -s busybox "$r/bin/$a"
done
printf '/dev/root / ext4 rw 0 1\n' >"$r/etc/fstab"
cat >"$r/sbin/init" <<'INIT'
#!/bin/busybox sh
# diskfarm golden image workload (tests/e2e/lib/make-golden-linux.sh)
export PATH=/bin
out() { echo "$*" >/dev/ttyS0; }
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/ttyS0 ] || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / 2>/dev/null
rootdev=$(awk '$2 == "/" && $1 != "rootfs" { d = $1 } END { print d }' /proc/mounts)
out "DISKFARM-ROOT-UP $(uname -r) $rootdev"
n=$(( $(cat /var/boot-count 2>/dev/null | wc -l) + 1 ))
echo "boot $n $(uname -r) $rootdev" >>/var/boot-count
sync
out "DISKFARM-BOOT-COUNT=$n"
if dd if=/dev/urandom of=/var/workload bs=1M count=32 conv=fsync 2>/tmp/dd.err; then
  w=$(sha256sum /var/workload | cut -d' ' -f1)
  sync; echo 3 >/proc/sys/vm/drop_caches
  r=$(sha256sum /var/workload | cut -d' ' -f1)
  if [ "$w" = "$r" ]; then out "DISKFARM-WORKLOAD-OK sha=$r"
  else out "DISKFARM-WORKLOAD-BAD wrote=$w read=$r"; fi
else
  out "DISKFARM-WORKLOAD-BAD dd: $(cat /tmp/dd.err)"
fi
rm -f /var/workload; sync
if t=$(fstrim -v / 2>&1); then out "DISKFARM-FSTRIM $t"
else out "DISKFARM-FSTRIM-FAILED $t"; fi
# the iSCSI connection's NOP-Out settings (libiscsi: recv_tmo is
# node.conn[0].timeo.noop_out_interval, ping_tmo its timeout; 0 = off)
for c in /sys/class/iscsi_connection/*; do
  [ -r "$c/recv_tmo" ] || continue
  out "DISKFARM-ISCSI-CONN ${c##*/} noop_out_interval=$(cat "$c/recv_tmo") noop_out_timeout=$(cat "$c/ping_tmo")"
done
for d in /sys/class/scsi_disk/*; do
  [ -r "$d/provisioning_mode" ] || continue
  out "DISKFARM-SD ${d##*/} provisioning_mode=$(cat "$d/provisioning_mode") cache_type=$(cat "$d/cache_type") max_write_same_blocks=$(cat "$d/max_write_same_blocks" 2>/dev/null)"
done
dmesg | grep -iE 'I/O error|iscsi|connection.*error|reset|nbd|sd [0-9]|EXT4-fs (error|warning)|blk_update' |
  while read -r l; do out "DISKFARM-KLOG $l"; done
mount -o remount,ro / 2>/dev/null; sync
out "DISKFARM-WORKLOAD-END"
poweroff -f
INIT
chmod 755 "$r/sbin/init"
mkfs.ext4 -q -F -L dfroot -U 6d1c2b44-8a53-4c39-9a55-d15cfa4f0001 -E root_owner=0:0 \
  -d "$r" "$tmp/root.ext4" "${ROOT_MIB}M"
step_end root-ext4

# ---- the small initramfs ----------------------------------------------------
# modprobe --show-depends prints "insmod PATH [OPTIONS]" in load order; keep
# the first occurrence of each module (builtins print "builtin NAME").
small_initrd() {
  local rd=$tmp/rd-small m line
  mkdir -p "$rd"/bin "$rd"/sbin "$rd"/dev "$rd"/proc "$rd"/sys "$rd"/run "$rd"/tmp "$rd"/newroot \
    "$rd"/etc/iscsi "$rd"/lib/modules "$rd"/usr/share/udhcpc
  cp "$BUSYBOX" "$rd/bin/busybox"
  for m in iscsi_tcp iscsi_ibft sd_mod ext4 crc32c_generic e1000 virtio_pci virtio_net nbd; do
    modprobe -S "$kver" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++' >"$tmp/insmod"
  while read -r _ path opts; do
    cp "$path" "$rd/lib/modules/"
    echo "$(basename "$path") $opts" >>"$rd/lib/modules/load-order"
  done <"$tmp/insmod"
  # A local disk (the hypervisor cache mode: a qcow2 overlay over the
  # device export on IDE): loaded only when there is no iBFT and no
  # nbdroot, so that a local boot disk never takes sda from the iSCSI LUN.
  modprobe -S "$kver" --show-depends ata_piix | awk '$1 == "insmod"' >"$tmp/insmod-local"
  while read -r _ path opts; do
    grep -q "^$(basename "$path") " "$rd/lib/modules/load-order" && continue
    cp "$path" "$rd/lib/modules/"
    echo "$(basename "$path") $opts" >>"$rd/lib/modules/load-order-local"
  done <"$tmp/insmod-local"
  for b in /sbin/iscsistart /sbin/nbd-client; do
    cp "$b" "$rd/sbin/"
    ldd "$b" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r line; do
      mkdir -p "$rd$(dirname "$line")"
      cp -L "$line" "$rd$line"
    done
  done
  cat >"$rd/usr/share/udhcpc/default.script" <<'DHCP'
#!/bin/busybox sh
case $1 in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
DHCP
  chmod 755 "$rd/usr/share/udhcpc/default.script"
  cat >"$rd/init" <<'INIT'
#!/bin/busybox sh
# diskfarm small initramfs: root on iSCSI through iBFT (default) or on NBD
# (nbdroot=HOST:PORT/EXPORT root=/dev/nbd0pN [ip=dhcp]), else (no iBFT) on
# a local IDE disk.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
say() { echo "diskfarm-initrd: $*" >/dev/ttyS0; }
fail() { echo "DISKFARM-INITRD-FAIL $*" >/dev/ttyS0; dmesg | tail -30 >/dev/ttyS0; poweroff -f; }
while read -r m opts; do insmod "/lib/modules/$m" $opts 2>/dev/null; done </lib/modules/load-order
root=/dev/sda2 nbdroot= ip=
for x in $(cat /proc/cmdline); do
  case $x in
    root=*) root=${x#root=} ;;
    nbdroot=*) nbdroot=${x#nbdroot=} ;;
    ip=*) ip=${x#ip=} ;;
  esac
done
i=0; while ! ip link show eth0 >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -n "$nbdroot" ]; then
  srv=${nbdroot%%:*}; rest=${nbdroot#*:}; port=${rest%%/*}; export=${rest#*/}
  ip link set eth0 up
  case $ip in
    dhcp|"") udhcpc -s /usr/share/udhcpc/default.script -i eth0 -n -q -t 10 -T 1 >/tmp/udhcpc.log 2>&1 ||
               fail "dhcp on eth0: $(cat /tmp/udhcpc.log)" ;;
    *) ip addr add "$ip" dev eth0 ;;
  esac
  say "eth0 $(ip -4 -o addr show eth0 | awk '{ print $4 }')"
  dev=${root%p[0-9]*}
  say "nbd-client $srv $port $dev -N $export"
  nbd-client "$srv" "$port" "$dev" -N "$export" >/dev/ttyS0 2>&1 || fail "nbd-client $srv $port $export"
  # the kernel scans the partitions at the next open of the device
  blockdev --rereadpt "$dev" || fail "partition table of $dev"
elif [ ! -d /sys/firmware/ibft ]; then
  # no iBFT, no nbdroot: a local disk (the hypervisor's overlay)
  say "no iBFT: root on a local disk"
  while read -r m opts; do insmod "/lib/modules/$m" $opts 2>/dev/null; done </lib/modules/load-order-local
else
  iscsistart -N >/dev/ttyS0 2>&1 || fail "iscsistart -N (network from iBFT)"
  iscsistart -b -P 'node.conn[0].timeo.noop_out_interval=5' \
    -P 'node.conn[0].timeo.noop_out_timeout=10' >/dev/ttyS0 2>&1 ||
    fail "iscsistart -b (login from iBFT)"
fi
i=0; while [ ! -b "$root" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$root" ] || fail "no $root after 30 s"
mount -t ext4 -o rw "$root" /newroot || fail "mount $root"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
INIT
  chmod 755 "$rd/init"
  (cd "$rd" && find . | cpio -o -H newc --quiet | gzip -6) >"$out/initrd-small"
}

# ---- Debian's initramfs ------------------------------------------------------
# mkinitramfs -d CONFDIR reads initramfs.conf, conf.d, modules, scripts and
# hooks from CONFDIR (plus /usr/share/initramfs-tools); the host's
# /etc/initramfs-tools is never read or written.  open-iscsi's hook copies
# the host's /etc/iscsi/iscsi.initramfs when present; our hook (run after
# the package hooks) writes ISCSI_AUTO=true into the image instead, the
# same file its local-top script reads (kernel cmdline `iscsi_auto` is the
# other documented way).
debian_initrd() {
  local c=$tmp/initramfs-conf
  mkdir -p "$c"/conf.d "$c"/hooks "$c"/scripts
  sed -e 's/^MODULES=.*/MODULES=list/' -e 's/^BUSYBOX=.*/BUSYBOX=y/' \
    /etc/initramfs-tools/initramfs.conf >"$c/initramfs.conf" 2>/dev/null ||
    printf 'MODULES=list\nBUSYBOX=y\nCOMPRESS=zstd\n' >"$c/initramfs.conf"
  grep -q '^MODULES=' "$c/initramfs.conf" || echo MODULES=list >>"$c/initramfs.conf"
  printf '%s\n' e1000 virtio_net virtio_pci sd_mod ext4 crc32c_generic >"$c/modules"
  cat >"$c/hooks/diskfarm-iscsi-auto" <<'HOOK'
#!/bin/sh
PREREQ=""
case $1 in prereqs) echo "$PREREQ"; exit 0 ;; esac
# ISCSI_AUTO=true: log in to what the firmware's iBFT says (iPXE sanboot)
echo ISCSI_AUTO=true >"$DESTDIR/etc/iscsi.initramfs"
HOOK
  chmod 755 "$c/hooks/diskfarm-iscsi-auto"
  mkinitramfs -d "$c" -o "$out/initrd-debian" "$kver" 2>"$tmp/mkinitramfs.log" ||
    { cat "$tmp/mkinitramfs.log" >&2; echo "make-golden-linux: mkinitramfs failed" >&2; exit 1; }
}

# ---- disk images -------------------------------------------------------------
# MBR (syslinux mbr.bin), partition 1 FAT (active) from sector 2048,
# partition 2 the ext4 root right after it.
assemble() { # FLAVOUR
  local fl=$1 img=$tmp/golden-$1.img part=$tmp/boot-$1.fat
  cat >"$tmp/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd console=ttyS0 panic=-1 no_timer_check root=/dev/sda2 rootwait rw quiet
CFG
  rm -f "$part"
  mkfs.fat -C "$part" $(( BOOT_MIB * 1024 )) >/dev/null
  mcopy -i "$part" "/boot/vmlinuz-$kver" ::vmlinuz
  mcopy -i "$part" "$out/initrd-$fl" ::initrd
  mcopy -i "$part" "$tmp/syslinux.cfg" ::syslinux.cfg
  syslinux --install "$part"
  truncate -s $(( (1 + BOOT_MIB + ROOT_MIB) * 1024 * 1024 )) "$img"
  printf 'label: dos\nstart=2048, size=%s, type=6, bootable\nstart=%s, type=83\n' \
    $(( BOOT_MIB * 2048 )) $(( 2048 + BOOT_MIB * 2048 )) | sfdisk -q "$img"
  dd if="$part" of="$img" bs=1M seek=1 conv=notrunc status=none
  dd if="$tmp/root.ext4" of="$img" bs=1M seek=$(( 1 + BOOT_MIB )) conv=notrunc status=none
  dd if="$MBR" of="$img" bs=440 count=1 conv=notrunc status=none
  mv "$img" "$out/golden-$fl.img"
}

# GPT, partition 1 the EFI System Partition from sector 2048 holding the
# unified kernel image as the removable-media loader \EFI\BOOT\BOOTX64.EFI
# (what firmware boots from a disk without boot entries, and what iPXE's
# sanboot starts), partition 2 the ext4 root.  The section addresses are
# the ones systemd's own ukify used before it computed them: above the
# stub's last section, .linux and .initrd last so either may be large.
assemble_uefi() { # FLAVOUR
  local fl=$1 img=$tmp/golden-$1-uefi.img part=$tmp/esp-$1.fat uki=$tmp/uki-$1.efi
  printf 'console=ttyS0 panic=-1 no_timer_check root=/dev/sda2 rootwait rw quiet' >"$tmp/cmdline"
  printf 'NAME="diskfarm golden"\nID=diskfarm-golden\n' >"$tmp/os-release"
  objcopy \
    --add-section .osrel="$tmp/os-release" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$tmp/cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="/boot/vmlinuz-$kver" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$out/initrd-$fl" --change-section-vma .initrd=0x3000000 \
    "$EFI_STUB" "$uki"
  rm -f "$part"
  mkfs.fat -C "$part" $(( BOOT_MIB * 1024 )) >/dev/null
  mmd -i "$part" ::EFI ::EFI/BOOT
  mcopy -i "$part" "$uki" ::EFI/BOOT/BOOTX64.EFI
  truncate -s $(( (1 + BOOT_MIB + ROOT_MIB) * 1024 * 1024 + 1024 * 1024 )) "$img"
  printf 'label: gpt\nstart=2048, size=%s, type=U, name=ESP\nstart=%s, size=%s, type=L, name=root\n' \
    $(( BOOT_MIB * 2048 )) $(( 2048 + BOOT_MIB * 2048 )) $(( ROOT_MIB * 2048 )) | sfdisk -q "$img"
  dd if="$part" of="$img" bs=1M seek=1 conv=notrunc status=none
  dd if="$tmp/root.ext4" of="$img" bs=1M seek=$(( 1 + BOOT_MIB )) conv=notrunc status=none
  mv "$img" "$out/golden-$fl-uefi.img"
}

cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
for fl in "$@"; do
  step
  case $fl in
    small) small_initrd ;;
    debian) debian_initrd ;;
  esac
  step_end "initrd-$fl"
  step
  if [ "$FIRMWARE" = uefi ]; then assemble_uefi "$fl"; img=golden-$fl-uefi.img
  else assemble "$fl"; img=golden-$fl.img; fi
  step_end "image-$fl"
  echo "make-golden-linux: $out/$img (kernel $kver, initrd $(( $(stat -c %s "$out/initrd-$fl") / 1024 )) KiB)"
done
