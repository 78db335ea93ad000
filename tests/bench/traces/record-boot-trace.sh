#!/bin/bash
# Records a boot trace for tests/bench/boot-storm: the e2e Linux disk
# (tests/e2e/lib/make-linux-disk.sh: Debian kernel + busybox initramfs) is
# imported as a vDisk and booted by qemu (TCG, SeaBIOS, IDE disk) from
# nbdkit's log filter in front of streamsvc's device export:
#   qemu -drive nbd -> nbdkit --filter=log nbd -> streamsvc device/rec01
# The log (per request: type, offset, count, timestamp) is converted to the
# trace format of traces/README: "t_us op offset length" a line.
# Usage: tests/bench/traces/record-boot-trace.sh [BUILD_DIR] [OUT] [ro|rw]
#   (defaults: build, tests/bench/traces/linux-boot.trace.gz, ro; gzipped
#   when OUT ends in .gz)
# ro: the e2e disk as it is: its initramfs loads no disk driver, so the
#   trace is the firmware's and syslinux's reads (BIOS int13).
# rw: the same disk with a bigger initramfs: the running kernel's
#   ata_piix, sd_mod and vfat modules (/lib/modules of the kernel used,
#   DF_KERNEL or the newest /boot/vmlinuz-*); /init mounts the FAT
#   partition, reads its files, writes a 4 KiB boot log and 256 KiB of
#   state, syncs and unmounts (writes and flushes), then powers off.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
build=$(realpath "${1:-build}")
out=${2:-$here/linux-boot.trace.gz}
kind=${3:-ro}
for t in nbdkit qemu-system-x86_64 python3; do
  command -v $t >/dev/null || { echo "record: $t missing"; exit 77; }
done
T=$(mktemp -d /tmp/df-trace.XXXXXX)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; sleep 0.3; rm -rf $T' EXIT
case $kind in
  ro) tests/e2e/lib/make-linux-disk.sh "$T/linux.img" 64 ;;
  rw) export DF_KERNEL=${DF_KERNEL:-$(ls /boot/vmlinuz-* | tail -1)}
      tests/e2e/lib/make-linux-disk.sh "$T/linux.img" 64
      "$here/rw-initramfs.sh" "$DF_KERNEL" "$T/initrd.gz"
      mcopy -o -i "$T/linux.img@@1M" "$T/initrd.gz" ::initrd.gz ;;
  *) echo "record: kind is ro or rw"; exit 2 ;;
esac
export DISKFARM_FARM=$T/farm
"$build/console/diskfarm" init >/dev/null
"$build/console/diskfarm" vdisk import linux "$T/linux.img" >/dev/null
"$build/console/diskfarm" device add rec01 --mac 52:54:00:00:20:01 --vdisk linux >/dev/null
"$build/streamsvc/streamsvc" --farm "$T/farm" --nbd-listen "unix:$T/df.sock" \
  --admin-listen none 2>"$T/df.log" &
pids="$pids $!"
for _ in $(seq 100); do [ -S "$T/df.sock" ] && break; sleep 0.1; done
nbdkit -f -U "$T/kit.sock" --filter=log nbd socket="$T/df.sock" export=device/rec01 \
  logfile="$T/requests.log" &
pids="$pids $!"
for _ in $(seq 100); do [ -S "$T/kit.sock" ] && break; sleep 0.1; done
: >"$T/serial.log"
qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none -no-reboot \
  -serial "file:$T/serial.log" -nic none \
  -drive "file=nbd+unix:///?socket=$T/kit.sock,format=raw,if=ide,cache=none" &
qpid=$!; pids="$pids $qpid"
for _ in $(seq 600); do
  grep -q DISKFARM-LINUX-UP "$T/serial.log" && break
  kill -0 $qpid 2>/dev/null || break
  sleep 0.5
done
grep -q DISKFARM-LINUX-UP "$T/serial.log" || { echo "record: the VM did not boot"; tail "$T/serial.log"; exit 1; }
kill $qpid 2>/dev/null; wait $qpid 2>/dev/null || true
sleep 0.5
python3 "$here/log-to-trace.py" "$T/requests.log" >"$T/trace"
case "$out" in *.gz) gzip -9c "$T/trace" >"$out" ;; *) cp "$T/trace" "$out" ;; esac
echo "record: $(grep -vc '^#' "$T/trace") requests -> $out"
