#!/bin/bash
# Bench (not pass/fail): isobuild vs `xorriso -as mkisofs` mastering the
# same tree (BIOS El Torito + boot info table + isohybrid MBR, Joliet, RR),
# best of N runs each; then `bdm iso`, `bdm partition` and `bdm inject`
# (libguestfs launch included).  Usage: iso-bench.sh BUILDDIR [TREE-MiB]
set -eu
B=${1:?usage: iso-bench.sh BUILDDIR [TREE-MiB]}
MIB=${2:-64}
RUNS=${RUNS:-3}
command -v xorriso >/dev/null || { echo "SKIP: xorriso missing"; exit 77; }
T=$(mktemp -d /tmp/df-isobench.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/tree/isolinux" "$T/tree/data"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$T/tree/isolinux/"
for i in $(seq 200); do echo "small file $i" > "$T/tree/data/f$i.txt"; done
head -c $((MIB * 1024 * 1024)) /dev/urandom > "$T/tree/data/big.bin"
best() { # prints best wall time in seconds of RUNS runs of "$@"
  local b=999999 s e d
  for _ in $(seq "$RUNS"); do
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    d=$(echo "$e - $s" | bc); b=$(echo "if ($d < $b) $d else $b" | bc)
  done
  echo "$b"
}
sync
ti=$(best "$B/isobuild/isobuild" -o "$T/a.iso" -b isolinux/isolinux.bin \
      --isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin "$T/tree")
tx=$(best xorriso -as mkisofs -o "$T/x.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
      -no-emul-boot -boot-load-size 4 -boot-info-table \
      -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin -R -J "$T/tree")
printf 'ISO of %d MiB + 200 files (best of %d):  isobuild %.3f s   xorriso -as mkisofs %.3f s   ratio %.2f\n' \
  "$MIB" "$RUNS" "$ti" "$tx" "$(echo "$ti / $tx" | bc -l)"
printf 'sizes: isobuild %d bytes, xorriso %d bytes\n' "$(stat -c %s "$T/a.iso")" "$(stat -c %s "$T/x.iso")"
tb=$(best "$B/bdm/bdm" iso "$T/b.iso" --server 10.0.0.5)
tp=$(best "$B/bdm/bdm" partition "$T/p.img" --server 10.0.0.5)
printf 'bdm iso %.3f s   bdm partition %.3f s\n' "$tb" "$tp"
if command -v guestfish >/dev/null; then
  export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
  export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
  qemu-img create -q -f raw "$T/t.raw" 256M
  echo 'start=2048, size=200M, type=83' | sfdisk -q "$T/t.raw"
  qemu-img convert -O qcow2 "$T/t.raw" "$T/t.qcow2"
  s=$(date +%s.%N); "$B/bdm/bdm" inject "$T/t.qcow2" --server 10.0.0.5 >/dev/null; e=$(date +%s.%N)
  printf 'bdm inject (qcow2, libguestfs %s): %.1f s\n' "$LIBGUESTFS_BACKEND_SETTINGS" "$(echo "$e - $s" | bc)"
fi
