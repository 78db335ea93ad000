#!/bin/sh
# README: testmbr.sh builds the diskfarm e2e test disk: `testmbr.sh OUT.img [LBA1-MARKER] [SIZE-MiB]`
#   writes a raw disk whose MBR (tests/e2e/lib/testmbr.S, GNU as, no nasm) prints on COM1
#   "DFMBR-START", "DFMBR-LBA1 <marker>" (int13 AH=42h read of LBA 1), writes LBA 2 (AH=43h),
#   "DFMBR-LBA2 DFMBR-WRITTEN" (read back), "DFMBR-BOOT <NN>" (a boot counter in LBA 3: read,
#   incremented, written back) and "DFMBR-DONE".  LBA 1 holds the marker
#   (default DFLBA1-OK), NUL-terminated.  `testmbr.sh --mbr OUT.bin` writes the 512-byte MBR only.
#   Exit 77 when binutils (as, ld) are missing.  Shared by the BDM, iSCSI and bootstrap e2e tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for t in as ld; do
  command -v "$t" >/dev/null 2>&1 || { echo "testmbr.sh: $t (binutils) not found" >&2; exit 77; }
done
mbr_only=0
if [ "${1:-}" = "--mbr" ]; then mbr_only=1; shift; fi
out=${1:?usage: testmbr.sh [--mbr] OUT [LBA1-MARKER] [SIZE-MiB]}
marker=${2:-DFLBA1-OK}
size=${3:-16}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
as --32 -o "$tmp/mbr.o" "$here/testmbr.S"
ld -m elf_i386 -Ttext=0x7c00 --oformat=binary -e _start -o "$tmp/mbr.bin" "$tmp/mbr.o"
n=$(wc -c < "$tmp/mbr.bin")
[ "$n" -eq 512 ] || { echo "testmbr.sh: MBR is $n bytes, not 512" >&2; exit 1; }
if [ "$mbr_only" -eq 1 ]; then
  mv "$tmp/mbr.bin" "$out"; exit 0
fi
truncate -s "${size}M" "$tmp/disk.img"
dd if="$tmp/mbr.bin" of="$tmp/disk.img" conv=notrunc status=none
printf '%s\0' "$marker" | dd of="$tmp/disk.img" bs=512 seek=1 conv=notrunc status=none
mv "$tmp/disk.img" "$out"
