#!/bin/bash
# version-inspect: `vdisk inspect` and `version diff` through libguestfs on
# a small vDisk holding a real ext4 filesystem with /etc/os-release, built
# without loop mounts (mkfs.ext4 -d).  Version 1 is made the real way: the
# maintenance device writes a second filesystem image over NBD, then seal.
# Skips (77) when the libguestfs appliance cannot start.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need mkfs.ext4 qemu-img python3 nbdcopy
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg

mkroot() { # dir hostname extra-file
  mkdir -p "$1/etc" "$1/bin" "$1/usr/bin" "$1/sbin" "$1/var" "$1/tmp"
  cat >"$1/etc/os-release" <<'OS'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
OS
  echo "$2" >"$1/etc/hostname"
  echo 12.5 >"$1/etc/debian_version"
  printf '/dev/sda / ext4 defaults 0 1\n' >"$1/etc/fstab"
  cp /bin/true "$1/bin/sh"
  echo "$3" >"$1/etc/$3"
}
mkroot "$T/r0" golden01 keep.conf
echo old >"$T/r0/etc/motd"
mkroot "$T/r1" golden01 new.conf
echo new >"$T/r1/etc/motd"
cp "$T/r0/etc/keep.conf" "$T/r1/etc/keep.conf"
rm "$T/r1/etc/keep.conf"
truncate -s 64M "$T/fs0.raw" "$T/fs1.raw"
mkfs.ext4 -q -F -d "$T/r0" "$T/fs0.raw"
mkfs.ext4 -q -F -d "$T/r1" "$T/fs1.raw"

df init >/dev/null
df vdisk import os "$T/fs0.raw" >/dev/null
df device add mnt --mac 52:54:00:00:00:03 --vdisk os --type maintenance >/dev/null

df --json vdisk inspect os >"$T/i.json" 2>"$T/i.err" || {
  grep -q "launch\|supermin\|kernel" "$T/i.err" && skip "libguestfs appliance: $(head -c 200 "$T/i.err")"
  cat "$T/i.err"; fail "vdisk inspect"; }
jcheck "$T/i.json" 'd["os"] == "linux"' 'd["distro"] == "debian"' \
  'd["hostname"] == "golden01"' 'd["product_name"]' 'd["os_version"] == "12.5"' \
  'any(f["type"] == "ext4" for f in d["filesystems"])'
pass "vdisk inspect"

df version new os >/dev/null
start_streamsvc
nbdcopy "$T/fs1.raw" "$(uri device/mnt)"
stop_streamsvc
df version seal os >/dev/null
df --json version diff os 0 1 >"$T/d.json" || fail "version diff"
jcheck "$T/d.json" \
  '{"path": "/etc/new.conf", "change": "added"} in d' \
  '{"path": "/etc/keep.conf", "change": "removed"} in d' \
  '{"path": "/etc/motd", "change": "changed"} in d' \
  '{"path": "/etc/os-release", "change": "changed"} not in d'
check_store os
pass "version diff"
