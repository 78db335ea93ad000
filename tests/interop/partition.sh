#!/bin/bash
# bdm partition + bdm inject: sfdisk shows the active 8 MiB partition,
# fsck.fat is clean, files and script are in place, rebuilds are identical;
# inject adds the partition to a qcow2 template without touching the
# existing one and refuses a full disk without changing it.
. "$(dirname "$0")/lib.sh"
need sfdisk fsck.fat mdir mtype qemu-img
B=${TESTS_BUILDDIR:?}/../..
BDM=${BDM:-$B/bdm/bdm}
[ -x "$BDM" ] || skip "bdm not built"
export MTOOLS_SKIP_CHECK=1

"$BDM" partition "$T/p.img" --server 10.9.8.7 --ip 10.9.8.50/24 --gateway 10.9.8.1 --dns 10.9.8.2 --local-fallback --verbose
"$BDM" partition "$T/p2.img" --server 10.9.8.7 --ip 10.9.8.50/24 --gateway 10.9.8.1 --dns 10.9.8.2 --local-fallback --verbose
cmp "$T/p.img" "$T/p2.img" || fail "bdm partition not reproducible"
[ "$(stat -c %s "$T/p.img")" -eq $((9 * 1024 * 1024)) ] || fail "image size"
sfdisk -d "$T/p.img" | grep -q "start= *2048, size= *16384, type=e, bootable" || { sfdisk -d "$T/p.img"; fail "partition entry"; }
[ "$(sfdisk -d "$T/p.img" | grep -c start=)" -eq 1 ] || fail "more than one partition"
cmp -n 440 "$T/p.img" /usr/lib/syslinux/mbr/mbr.bin || fail "MBR boot code is not syslinux mbr.bin"
pass "sfdisk: one active 8 MiB FAT16-LBA partition at 1 MiB, syslinux MBR"
dd if="$T/p.img" of="$T/p.fat" bs=1M skip=1 status=none
fsck.fat -n "$T/p.fat" || fail "fsck.fat"
mdir -i "$T/p.fat" -a :: | grep -qi "ldlinux  *sys" || fail "syslinux not installed"
mtype -i "$T/p.fat" ::diskfarm/ipxe.lkrn | cmp - /usr/lib/ipxe/ipxe.lkrn || fail "ipxe.lkrn"
s=$(mtype -i "$T/p.fat" ::diskfarm/boot.ipxe)
for want in 'set net0/ip 10.9.8.50' 'set net0/netmask 255.255.255.0' 'set net0/gateway 10.9.8.1' \
            'set dns 10.9.8.2' 'sanboot --no-describe --drive 0x80' 'http://10.9.8.7/boot.ipxe' 'ifstat'; do
  echo "$s" | grep -qF "$want" || fail "script lacks '$want'"
done
mtype -i "$T/p.fat" ::syslinux.cfg | grep -q "INITRD /diskfarm/boot.ipxe" || fail "syslinux.cfg"
od -An -tu4 -j28 -N4 "$T/p.fat" | grep -qw 2048 || fail "hidden sectors != 2048"
pass "fsck.fat clean; syslinux, ipxe.lkrn, static-IP script, syslinux.cfg in place"

out=$("$BDM" partition "$T/bad.img" --server 1.2.3.4 --syslinux-dir "$T/none" 2>&1) && fail "missing syslinux accepted"
echo "$out" | grep -q "missing boot file $T/none/mbr/mbr.bin" || fail "message: $out"
out=$("$BDM" partition "$T/bad.img" --server 1.2.3.4 --gateway 1.1.1.1 2>&1) && fail "gateway without ip"
ls -A "$T" | grep -q bad && fail "a failed build left a file"
pass "errors: missing syslinux, gateway without --ip; nothing left behind"

# ---- inject (libguestfs) ----
command -v guestfish >/dev/null || skip "libguestfs tools not installed (inject not tested)"
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
qemu-img create -q -f raw "$T/t.raw" 64M
echo 'start=2048, size=40M, type=83, bootable' | sfdisk -q "$T/t.raw"
printf 'EXISTING-PARTITION-DATA' | dd of="$T/t.raw" bs=1M seek=1 conv=notrunc status=none
qemu-img convert -O qcow2 "$T/t.raw" "$T/t.qcow2"
sum1=$(dd if="$T/t.raw" bs=1M skip=1 count=40 status=none | sha256sum)
"$BDM" inject "$T/t.qcow2" --server 10.9.8.7 | grep -q "added boot partition 2 (qcow2" || fail "inject"
qemu-img convert -O raw "$T/t.qcow2" "$T/t2.raw"
sfdisk -d "$T/t2.raw" | grep -q "t2.raw1 : start= *2048, size= *81920, type=83$" || { sfdisk -d "$T/t2.raw"; fail "partition 1 changed"; }
sfdisk -d "$T/t2.raw" | grep -q "t2.raw2 : start= *83968, size= *16384, type=e, bootable" || { sfdisk -d "$T/t2.raw"; fail "boot partition"; }
[ "$(dd if="$T/t2.raw" bs=1M skip=1 count=40 status=none | sha256sum)" = "$sum1" ] || fail "partition 1 data changed"
dd if="$T/t2.raw" of="$T/t2.fat" bs=512 skip=83968 count=16384 status=none
fsck.fat -n "$T/t2.fat" >/dev/null || fail "injected FAT not clean"
od -An -tu4 -j28 -N4 "$T/t2.fat" | grep -qw 83968 || fail "hidden sectors != partition start"
pass "inject: qcow2 template gets active partition 2, partition 1 intact"

qemu-img create -q -f qcow2 "$T/full.qcow2" 20M
qemu-img convert -O raw "$T/full.qcow2" "$T/full.raw"; rm "$T/full.qcow2"
echo 'start=2048, type=83' | sfdisk -q "$T/full.raw"
before=$(sha256sum < "$T/full.raw")
out=$("$BDM" inject "$T/full.raw" --server 10.9.8.7 2>&1) && fail "full disk accepted"
echo "$out" | grep -q "is full: the boot partition needs 8 MiB" || fail "message: $out"
[ "$(sha256sum < "$T/full.raw")" = "$before" ] || fail "refused inject changed the disk"
pass "inject: a full disk is refused and left unchanged"
