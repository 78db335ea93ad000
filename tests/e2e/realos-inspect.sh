#!/bin/bash
# e2e (libguestfs, no boot): `diskfarm vdisk inspect` says whether a
# golden image's initramfs can take over a root on iSCSI (iBFT) or on NBD,
# on images built from Debian's packages (tests/e2e/lib):
#   golden-small  (make-golden-linux.sh small: iscsistart + nbd-client)
#                 -> iscsi root yes (iscsistart), nbd root yes, no warning
#   golden-debian (Debian's initramfs-tools + open-iscsi, ISCSI_AUTO=true)
#                 -> flavour initramfs-tools, iscsi yes (ISCSI_AUTO=true)
#   linux         (make-linux-disk.sh: a busybox initramfs only, /initrd.gz)
#                 -> iscsi no, nbd no, a warning for each on stderr;
#                    the command still succeeds (inspection is advice)
# Skips (77) without libguestfs, or without the packages the images need.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${DISKFARM:?DISKFARM not set}"
e2e_need python3
"$DISKFARM" vdisk inspect --help >/dev/null 2>&1 || e2e_skip "diskfarm without vdisk inspect"
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
FLAVOURS="small debian"
command -v mkinitramfs >/dev/null 2>&1 || [ -x /usr/sbin/mkinitramfs ] || FLAVOURS=small

realos_images "$T/img" $FLAVOURS
"$E2E_LIB/make-linux-disk.sh" "$T/img/linux.img" 64 >"$T/linux.log" 2>&1 ||
  { cat "$T/linux.log"; e2e_fail "make-linux-disk.sh failed"; }
df init >/dev/null
for fl in $FLAVOURS; do df vdisk import "golden-$fl" "$T/img/golden-$fl.img" >/dev/null; done
df vdisk import linux "$T/img/linux.img" >/dev/null

inspect() { # VDISK: JSON on $T/VDISK.json, stderr on $T/VDISK.err
  local t0=$(date +%s)
  df --json vdisk inspect "$1" >"$T/$1.json" 2>"$T/$1.err" ||
    { cat "$T/$1.err"; e2e_fail "vdisk inspect $1 failed"; }
  echo "vdisk inspect $1: $(( $(date +%s) - t0 )) s"
}
# field VDISK KEY: KEY of the (one) initramfs record
field() {
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
irs = d["initramfs"]
assert len(irs) == 1, irs
v = irs[0][sys.argv[2]]
print(str(v).lower() if isinstance(v, bool) else v)' "$T/$1.json" "$2"
}

inspect golden-small
[ "$(field golden-small path)" = /initrd ] || e2e_fail "small: initramfs not found: $(cat "$T/golden-small.json")"
[ "$(field golden-small iscsi_root)" = true ] || e2e_fail "small: no iSCSI root: $(cat "$T/golden-small.json")"
field golden-small iscsi_how | grep -q iscsistart || e2e_fail "small: iscsistart not named"
[ "$(field golden-small nbd_root)" = true ] || e2e_fail "small: no NBD root"
! grep -v "has no EFI System Partition" "$T/golden-small.err" | grep -q warning || e2e_fail "small: unexpected warning: $(cat "$T/golden-small.err")"
e2e_pass "small initramfs: iSCSI root (iscsistart) and NBD root (nbd-client), no warning"

case $FLAVOURS in
  *debian*)
    inspect golden-debian
    [ "$(field golden-debian flavour)" = initramfs-tools ] || e2e_fail "debian: flavour $(field golden-debian flavour)"
    [ "$(field golden-debian iscsi_root)" = true ] || e2e_fail "debian: no iSCSI root: $(cat "$T/golden-debian.json")"
    field golden-debian iscsi_how | grep -q 'ISCSI_AUTO=true' || e2e_fail "debian: ISCSI_AUTO not named"
    [ "$(field golden-debian nbd_root)" = true ] || e2e_fail "debian: no NBD root"
    ! grep -v "has no EFI System Partition" "$T/golden-debian.err" | grep -q warning || e2e_fail "debian: unexpected warning: $(cat "$T/golden-debian.err")"
    e2e_pass "Debian's initramfs: open-iscsi with ISCSI_AUTO=true (iSCSI root) and nbd-client (NBD root)" ;;
  *) echo "SKIP: Debian's initramfs (initramfs-tools missing)" ;;
esac

# the table, not JSON, this time (and the warnings on stderr)
df vdisk inspect linux >"$T/linux.out" 2>"$T/linux.err" ||
  { cat "$T/linux.err"; e2e_fail "vdisk inspect linux failed"; }
grep -E '^ +/dev/sda1 +/initrd.gz +other +no ' "$T/linux.out" >/dev/null ||
  e2e_fail "the table does not show the verdict: $(cat "$T/linux.out")"
grep -E '^ +/dev/sda1 +/initrd.gz .* no +no nbd-client' "$T/linux.out" >/dev/null ||
  e2e_fail "the table does not show the NBD verdict: $(cat "$T/linux.out")"
grep -q 'warning: /dev/sda1:/initrd.gz cannot take over an iSCSI root: no iscsistart' "$T/linux.err" ||
  e2e_fail "no iSCSI warning: $(cat "$T/linux.err")"
grep -q 'warning: /dev/sda1:/initrd.gz cannot take over an NBD root' "$T/linux.err" ||
  e2e_fail "no NBD warning: $(cat "$T/linux.err")"
e2e_pass "a busybox-only initramfs: inspect warns it cannot take over an iSCSI or NBD root"
