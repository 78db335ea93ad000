#!/bin/bash
# README: make-linux-disk.sh OUT.img [SIZE-MiB]: a bootable BIOS disk image
#   holding a Debian kernel and a busybox-static initramfs, made without
#   loop mounts or root: syslinux's mbr.bin, one active FAT partition
#   (mkfs.fat -C + mcopy + syslinux --install).  /init mounts devtmpfs,
#   prints "DISKFARM-LINUX-UP <kernel release>" on /dev/ttyS0 (kernel
#   console=ttyS0) and powers off.  Kernel: $DF_KERNEL if set, else the
#   vmlinuz of Debian's linux-image-amd64 (apt-get download + dpkg-deb -x,
#   cached in ${XDG_CACHE_HOME:-~/.cache}/diskfarm), else /boot/vmlinuz-*.
#   Used by tests/e2e/iscsi-boot-linux.sh and dist/demo.  Exit 77 when a
#   tool is missing.
set -eu
out=${1:?usage: make-linux-disk.sh OUT.img [SIZE-MiB]}
size=${2:-64}
MBR=/usr/lib/syslinux/mbr/mbr.bin
BUSYBOX=/bin/busybox
for t in mkfs.fat mcopy syslinux sfdisk cpio gzip; do
  command -v $t >/dev/null 2>&1 || { echo "make-linux-disk: $t missing" >&2; exit 77; }
done
for f in $MBR $BUSYBOX; do
  [ -f $f ] || { echo "make-linux-disk: $f missing" >&2; exit 77; }
done
"$BUSYBOX" --list 2>/dev/null | grep -qx mount ||
  { echo "make-linux-disk: $BUSYBOX is not busybox-static" >&2; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

kernel_from_deb() {
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/diskfarm pkg deb
  command -v apt-get >/dev/null 2>&1 || return 1
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || return 1
  mkdir -p "$cache"
  if ! ls "$cache/$pkg"/boot/vmlinuz-* >/dev/null 2>&1; then
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || return 1
    deb=$(ls "$tmp"/"$pkg"_*.deb | head -1)
    mkdir -p "$cache/$pkg"
    dpkg-deb -x "$deb" "$cache/$pkg" || return 1
    rm -f "$deb"
  fi
  ls "$cache/$pkg"/boot/vmlinuz-* | head -1
}

kernel=${DF_KERNEL:-}
[ -n "$kernel" ] || kernel=$(kernel_from_deb || true)
[ -n "$kernel" ] || kernel=$(ls /boot/vmlinuz-* 2>/dev/null | head -1 || true)
[ -n "$kernel" ] && [ -r "$kernel" ] ||
  { echo "make-linux-disk: no kernel (set DF_KERNEL)" >&2; exit 77; }

# initramfs: busybox + /init
mkdir -p "$tmp/rd/bin" "$tmp/rd/dev" "$tmp/rd/proc"
cp "$BUSYBOX" "$tmp/rd/bin/busybox"
cat >"$tmp/rd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
echo "DISKFARM-LINUX-UP $(/bin/busybox uname -r)" >/dev/ttyS0
/bin/busybox poweroff -f
INIT
chmod +x "$tmp/rd/init"
(cd "$tmp/rd" && find . | cpio -o -H newc --quiet | gzip -9) >"$tmp/initrd.gz"

cat >"$tmp/syslinux.cfg" <<'CFG'
DEFAULT linux
PROMPT 0
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.gz console=ttyS0 panic=-1 quiet
CFG

# FAT partition from sector 2048 to the end, built as a file
part_kib=$(( (size - 1) * 1024 ))
mkfs.fat -C "$tmp/part.img" "$part_kib" >/dev/null
mcopy -i "$tmp/part.img" "$kernel" ::vmlinuz
mcopy -i "$tmp/part.img" "$tmp/initrd.gz" ::initrd.gz
mcopy -i "$tmp/part.img" "$tmp/syslinux.cfg" ::syslinux.cfg
syslinux --install "$tmp/part.img"

truncate -s "${size}M" "$tmp/disk.img"
printf 'label: dos\nstart=2048, type=6, bootable\n' | sfdisk -q "$tmp/disk.img"
dd if="$tmp/part.img" of="$tmp/disk.img" bs=1M seek=1 conv=notrunc status=none
dd if="$MBR" of="$tmp/disk.img" bs=440 count=1 conv=notrunc status=none
mv "$tmp/disk.img" "$out"
echo "make-linux-disk: $out ($size MiB, kernel $(basename "$kernel"))"
