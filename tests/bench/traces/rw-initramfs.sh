#!/bin/bash
# rw-initramfs.sh VMLINUZ OUT.gz: the initramfs of record-boot-trace.sh's
# rw boot: busybox-static, the IDE disk and FAT modules of VMLINUZ's
# release (from /lib/modules/RELEASE, with their dependencies, in load
# order), and an /init that mounts /dev/sda1, reads it, writes a boot log
# and some state, syncs, unmounts and powers off after printing
# DISKFARM-LINUX-UP on ttyS0.
set -eu
kernel=$1 out=$2
release=$(basename "$kernel" | sed 's/^vmlinuz-//')
M=/lib/modules/$release
[ -f "$M/modules.dep" ] || { echo "rw-initramfs: $M/modules.dep missing" >&2; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rd/bin" "$tmp/rd/dev" "$tmp/rd/proc" "$tmp/rd/sys" "$tmp/rd/mnt" "$tmp/rd/mod"
cp /bin/busybox "$tmp/rd/bin/busybox"
# load order: each module after its dependencies (modules.dep lists them)
order=()
add() {
  local m=$1 d
  for d in $(awk -v m="$m:" '$1 == m { for (i = 2; i <= NF; i++) print $i }' "$M/modules.dep"); do add "$d"; done
  case " ${order[*]} " in *" $m "*) ;; *) order+=("$m") ;; esac
}
for m in crct10dif_generic ata_piix sd_mod vfat nls_cp437 nls_ascii nls_utf8; do
  add "$(grep -oE "^[^:]*/$m\.ko:" "$M/modules.dep" | tr -d :)"
done
: >"$tmp/rd/modules"
for m in "${order[@]}"; do
  cp "$M/$m" "$tmp/rd/mod/"
  echo "$(basename "$m")" >>"$tmp/rd/modules"
done
cat >"$tmp/rd/init" <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs devtmpfs /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
for m in $($B cat /modules); do $B insmod /mod/$m; done
for i in $($B seq 100); do [ -b /dev/sda1 ] && break; $B sleep 0.1; done
$B mount -t vfat /dev/sda1 /mnt
$B cat /mnt/syslinux.cfg /mnt/ldlinux.c32 >/dev/null 2>&1
$B ls -l /mnt >/dev/null
$B dmesg | $B head -c 4096 >/mnt/boot.log
$B dd if=/dev/urandom of=/mnt/state.bin bs=4k count=64 2>/dev/null
$B sync
$B umount /mnt
echo "DISKFARM-LINUX-UP $($B uname -r) rw" >/dev/ttyS0
$B poweroff -f
INIT
chmod +x "$tmp/rd/init"
(cd "$tmp/rd" && find . | cpio -o -H newc --quiet | gzip -9) >"$out"
