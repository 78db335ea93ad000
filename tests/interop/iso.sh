#!/bin/bash
# isobuild + bdm iso: El Torito catalog and files as xorriso and isoinfo see
# them, byte-identical rebuilds, SOURCE_DATE_EPOCH honoured, clean errors.
. "$(dirname "$0")/lib.sh"
need xorriso isoinfo fdisk
B=${TESTS_BUILDDIR:?}/../..
ISOBUILD=${ISOBUILD:-$B/isobuild/isobuild}
BDM=${BDM:-$B/bdm/bdm}
[ -x "$ISOBUILD" ] && [ -x "$BDM" ] || skip "isobuild/bdm not built"
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || skip "isolinux not installed"
[ -f /usr/lib/ipxe/ipxe.efi ] || skip "ipxe not installed"

tree=$T/tree
mkdir -p "$tree/isolinux" "$tree/docs/sub"
cp /usr/lib/ISOLINUX/isolinux.bin "$tree/isolinux/"
echo "DEFAULT x" > "$tree/isolinux/isolinux.cfg"
echo "hello iso" > "$tree/docs/sub/A Long File Name.text"
head -c 100000 /dev/urandom > "$tree/docs/random.bin"

build() { "$ISOBUILD" -o "$1" -b isolinux/isolinux.bin \
  --isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
  --efi-binary /usr/lib/ipxe/ipxe.efi "$tree"; }
build "$T/a.iso"
touch "$tree/docs/random.bin"; sleep 1
build "$T/b.iso"
cmp "$T/a.iso" "$T/b.iso" || fail "two isobuild runs differ"
pass "isobuild: two builds byte-identical"
SOURCE_DATE_EPOCH=1700000000 build "$T/c.iso"
cmp -s "$T/a.iso" "$T/c.iso" && fail "SOURCE_DATE_EPOCH ignored"
xorriso -indev "$T/c.iso" -pvd_info 2>&1 | grep -q "^Creation Time: 2023111422132000" ||
  { xorriso -indev "$T/c.iso" -pvd_info; fail "volume date is not SOURCE_DATE_EPOCH"; }
pass "isobuild: SOURCE_DATE_EPOCH sets the dates"

rep=$(xorriso -indev "$T/a.iso" -report_el_torito plain 2>&1)
echo "$rep" | grep -q "El Torito boot img :   1  BIOS  y   none" || { echo "$rep"; fail "no BIOS no-emul entry"; }
echo "$rep" | grep -q "El Torito boot img :   2  UEFI  y   none" || { echo "$rep"; fail "no UEFI entry"; }
echo "$rep" | grep -q "boot-info-table" || fail "no boot info table"
echo "$rep" | grep -q "MBR isohybrid" || { echo "$rep"; fail "not isohybrid"; }
pass "xorriso: BIOS + UEFI El Torito, boot info table, isohybrid MBR"

isoinfo -d -i "$T/a.iso" | grep -q "Joliet" || fail "no Joliet"
isoinfo -d -i "$T/a.iso" | grep -q "Rock Ridge" || fail "no Rock Ridge"
isoinfo -R -f -i "$T/a.iso" | grep -qx "/docs/sub/A Long File Name.text" || fail "RR name missing"
isoinfo -J -f -i "$T/a.iso" | grep -q "/docs/sub/A Long File Name.text" || fail "Joliet name missing"
[ "$(isoinfo -R -x "/docs/sub/A Long File Name.text" -i "$T/a.iso")" = "hello iso" ] || fail "file content"
isoinfo -R -x /docs/random.bin -i "$T/a.iso" | cmp - "$tree/docs/random.bin" || fail "binary content"
isoinfo -R -x /efi/efiboot.img -i "$T/a.iso" > "$T/efi.img"
MTOOLS_SKIP_CHECK=1 mtype -i "$T/efi.img" ::EFI/BOOT/BOOTX64.EFI | cmp - /usr/lib/ipxe/ipxe.efi || fail "BOOTX64.EFI"
fdisk -l "$T/a.iso" | grep -q "^$T/a.iso1 \*" || { fdisk -l "$T/a.iso"; fail "no active hybrid partition"; }
pass "isoinfo: Joliet + Rock Ridge names and contents, EFI FAT image, hybrid MBR"

# bdm iso
"$BDM" iso "$T/boot.iso" --server 10.9.8.7:8080 --server 10.9.8.6 --iscsi-port 3261 --timeout 5 --retries 2
"$BDM" iso "$T/boot2.iso" --server 10.9.8.7:8080 --server 10.9.8.6 --iscsi-port 3261 --timeout 5 --retries 2
cmp "$T/boot.iso" "$T/boot2.iso" || fail "bdm iso not reproducible"
xorriso -indev "$T/boot.iso" -report_el_torito plain 2>&1 | grep -q "El Torito img path :   1  /isolinux/isolinux.bin" || fail "bdm iso catalog"
script=$(isoinfo -R -x /diskfarm/boot.ipxe -i "$T/boot.iso")
echo "$script" | head -1 | grep -qx '#!ipxe' || fail "script header"
echo "$script" | grep -q 'chain --replace --autofree http://10.9.8.7:8080/boot.ipxe?mac=${net0/mac}' || fail "first server URL"
[ "$(echo "$script" | grep -c 'http://10.9.8.6/boot.ipxe')" -eq 2 ] || fail "second server x2 retries"
echo "$script" | grep -q 'sanboot iscsi:10.9.8.7::3261:1:iqn.2026-11.org.diskfarm:${net0/mac:hexhyp} iscsi:10.9.8.6::3261:1:' || fail "direct sanboot"
isoinfo -R -x /isolinux/isolinux.cfg -i "$T/boot.iso" | grep -q "TIMEOUT 50" || fail "menu timeout"
[ "$(isoinfo -R -x /diskfarm/ipxe.lkrn -i "$T/boot.iso" | wc -c)" -eq "$(stat -L -c %s /usr/lib/ipxe/ipxe.lkrn)" ] || fail "ipxe.lkrn content"
pass "bdm iso: reproducible, catalog, script with servers in order + retries + direct iSCSI"

# errors: one line, exit 1, nothing left behind
out=$("$BDM" iso "$T/bad.iso" --server 1.2.3.4 --ipxe-dir "$T/none" 2>&1) && fail "missing iPXE accepted"
echo "$out" | grep -q "^bdm: missing boot file $T/none/ipxe.lkrn" || fail "message: $out"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "more than one line: $out"
out=$("$BDM" iso "$T/bad.iso" 2>&1) && fail "no server accepted"
echo "$out" | grep -q "no server" || fail "message: $out"
out=$("$BDM" iso "$T/bad.iso" -s 1.1.1.1 -s 1.1.1.2 -s 1.1.1.3 -s 1.1.1.4 -s 1.1.1.5 2>&1) && fail "5 servers accepted"
echo "$out" | grep -q "at most 4" || fail "message: $out"
out=$("$BDM" iso "$T/bad.iso" -s '1.2.3.4:99999' 2>&1) && fail "bad port accepted"
out=$("$BDM" iso "$T/bad.iso" -s '1.2.3.4' --ip 10.0.0.5/33 2>&1) && fail "bad prefix accepted"
out=$("$BDM" iso "$T/bad.iso" -s 'a b' 2>&1) && fail "bad host accepted"
out=$("$ISOBUILD" -o "$T/bad.iso" "$T/none" 2>&1) && fail "isobuild missing input accepted"
ls -A "$T" | grep -q "bad" && fail "a failed build left a file: $(ls -A "$T")"
pass "errors: one line each, no output left behind"
