# README: tests/e2e/lib/realos.sh: helpers for the e2e tests where a real OS
#   runs from the stream (realos-iscsi.sh, realos-nbd.sh), sourced after
#   e2e.sh.  realos_init (e2e_init),
#   realos_images OUTDIR [--firmware bios|uefi] FLAVOUR... (make-golden-linux.sh, 77 ->
#   skip), realos_qemu_start NAME LOG ARGS... / realos_qemu_wait NAME TIMEOUT
#   (a VM in the background, killed by PID in the cleanup trap),
#   realos_check_boot LOG COUNT (markers of the workload, boot counter, no
#   kernel I/O, SCSI, iSCSI or NBD error), realos_cached_count NBD-URI
#   (the boot counter file read through an NBD export: number of lines, or
#   "none"), realos_store_sum FARM (sha256 of every vDisk store file).

# realos_init: e2e_init (whose cleanup survives set -e and signals).
realos_init() {
  e2e_init
}

# What the OS log must not hold: block layer, SCSI, iSCSI, NBD and ext4
# errors and recoveries, and the sd driver's complaints about missing pages.
REALOS_BAD='I/O error|blk_update_request|critical (target|medium|nexus)|Sense Key|Add\. Sense|detected conn error|connection[0-9:]* (error|failed)|iscsi.*(error|fail)|session recovery|timing out command|abort|[^a-z]reset|EXT4-fs (error|warning)|nbd.*(error|timed out|dead)|Asking for cache data failed|Assuming drive cache|DISKFARM-(WORKLOAD-BAD|FSTRIM-FAILED|INITRD-FAIL)'

realos_images() { # OUTDIR [--firmware bios|uefi] FLAVOUR...
  local out=$1 rc=0 t0 fw=bios
  shift
  [ "${1:-}" = --firmware ] && { fw=$2; shift 2; }
  t0=$(date +%s)
  "$E2E_LIB/make-golden-linux.sh" --firmware "$fw" "$out" "$@" >"$out.log" 2>&1 || rc=$?
  [ $rc -eq 77 ] && e2e_skip "cannot build the golden images: $(tail -1 "$out.log")"
  [ $rc -eq 0 ] || { cat "$out.log"; e2e_fail "make-golden-linux.sh failed"; }
  echo "images ($*) built in $(( $(date +%s) - t0 )) s: $(tr '\n' ' ' <"$out/build-times")"
}

# realos_qemu_start NAME LOG QEMU-ARGS...: qemu (TCG, serial to LOG,
# -no-reboot) in the background; its PID goes to E2E_PIDS (killed in the
# trap) and to REALOS_PID_<NAME>.  A command prefix (ip netns exec ...) may
# come from $REALOS_QEMU_PREFIX.
realos_qemu_start() {
  local name=$1 log=$2
  shift 2
  : >"$log"
  eval "REALOS_T0_$name=$(date +%s)"
  ${REALOS_QEMU_PREFIX:-} qemu-system-x86_64 -accel tcg -m 384 -display none \
    -monitor none -serial "file:$log" -no-reboot "$@" >"$log.qemu" 2>&1 &
  eval "REALOS_PID_$name=$!"
  E2E_PIDS="$E2E_PIDS $!"
}

# realos_qemu_wait NAME LOG TIMEOUT: wait for the workload's end marker or
# for qemu to exit; kill qemu at TIMEOUT.  Prints the seconds from power-on
# to the marker; returns 1 without the marker.
realos_qemu_wait() {
  local name=$1 log=$2 timeout=$3 pid t0 now
  eval "pid=\$REALOS_PID_$name; t0=\$REALOS_T0_$name"
  while :; do
    now=$(date +%s)
    if grep -q DISKFARM-WORKLOAD-END "$log" 2>/dev/null; then
      echo "$name: workload end $(( now - t0 )) s after power-on"
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    [ $(( now - t0 )) -lt "$timeout" ] || { echo "$name: timed out after $timeout s"; break; }
    sleep 0.5
  done
  # poweroff -f follows the marker at once; give it a moment, then kill.
  for _ in 1 2 3 4 5 6; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -q DISKFARM-WORKLOAD-END "$log"
}

realos_dump() { # LOG: what a failing boot said
  echo "--- $1 (serial, without DISKFARM-KLOG)"
  grep -av DISKFARM-KLOG "$1" | tail -40 || true
  cat "$1.qemu" 2>/dev/null || true
}

# realos_check_boot LOG COUNT: the workload ran to its end on a root from
# the stream, the boot counter says COUNT, and the OS log is clean.
realos_check_boot() {
  local log=$1 count=$2 bad
  grep -aq 'DISKFARM-ROOT-UP' "$log" || { realos_dump "$log"; e2e_fail "$log: no root"; }
  grep -aq 'DISKFARM-WORKLOAD-OK sha=' "$log" ||
    { realos_dump "$log"; e2e_fail "$log: workload read back wrong or did not run"; }
  grep -aq 'DISKFARM-FSTRIM /: [0-9]* bytes' "$log" ||
    { realos_dump "$log"; e2e_fail "$log: fstrim failed"; }
  grep -aqx "DISKFARM-BOOT-COUNT=$count" <(tr -d '\r' <"$log") ||
    { grep -a DISKFARM-BOOT-COUNT "$log"; e2e_fail "$log: boot counter is not $count"; }
  bad=$(tr -d '\r' <"$log" | grep -aiE "$REALOS_BAD" | grep -v 'Command line' | sort -u || true)
  [ -z "$bad" ] || { echo "$bad"; e2e_fail "$log: kernel I/O, SCSI, iSCSI or NBD errors in the OS log"; }
}

# realos_cached_count NBD-URI: lines in /var/boot-count of the root
# partition (partition 2) read through the export, "none" when the file is
# absent; the copy must pass e2fsck -fn (clean ext4, journal flushed).
realos_cached_count() {
  local uri=$1 d start
  d=$(mktemp -d "$E2E_TMP/export.XXXXXX")
  nbdcopy "$uri" "$d/disk.img" || e2e_fail "nbdcopy $uri failed"
  start=$(sfdisk -d "$d/disk.img" | awk -F'[=,]' '/img2 :/ { gsub(/ /, "", $2); print $2 }')
  [ -n "$start" ] || e2e_fail "$uri: no partition 2"
  dd if="$d/disk.img" of="$d/root.ext4" bs=512 skip="$start" status=none
  e2fsck -fn "$d/root.ext4" >"$d/fsck.log" 2>&1 ||
    { cat "$d/fsck.log"; e2e_fail "$uri: the root file system is not clean"; }
  if debugfs -R 'stat /var/boot-count' "$d/root.ext4" 2>/dev/null | grep -q Inode:; then
    debugfs -R 'cat /var/boot-count' "$d/root.ext4" 2>/dev/null | wc -l
  else
    echo none
  fi
  rm -rf "$d"
}

realos_store_sum() { # FARM
  (cd "$1/store" && find . -type f | sort | xargs sha256sum)
}
