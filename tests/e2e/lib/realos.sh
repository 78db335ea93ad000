# README: tests/e2e/lib/realos.sh: helpers for the e2e tests where a real OS
#   runs from the stream (realos-iscsi.sh, realos-nbd.sh), sourced after
#   e2e.sh.  realos_init (e2e_init),
#   realos_images OUTDIR [--firmware bios|uefi] FLAVOUR... (make-golden-linux.sh, 77 ->
#   skip), realos_qemu_start NAME LOG ARGS... / realos_qemu_wait NAME TIMEOUT
#   (a VM in the background, killed by PID in the cleanup trap),
#   realos_check_boot LOG COUNT (markers of the workload, boot counter, no
#   kernel I/O, SCSI, iSCSI or NBD error), realos_cached_count NBD-URI|FILE
#   (the boot counter file read through an NBD export or from an image:
#   number of lines, or "none"), realos_store_sum FARM (sha256 of every vDisk store file),
#   realos_store_kept FARM SUMS (every file of an earlier sum unchanged),
#   realos_lan_daemons NET (streamsvc + bootstrapsvc on an e2e_lan LAN),
#   realos_bootstrapsvc NET LOG [OPTION...] (bootstrapsvc alone, e.g. again
#   with --chain-ipxe after `kill $REALOS_BS_PID`),
#   warm reboots: REALOS_WARM=1 realos_qemu_start (-no-shutdown, HMP
#   monitor), realos_warm_reset NAME LOG, realos_warm_wait NAME LOG N
#   TIMEOUT, realos_boot_log LOG NAME N OUT (the serial output of boot N),
#   realos_records_check RAW START SECTORS LOG (the records workload's
#   acknowledged records intact in the root partition of a flat image).

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
# come from $REALOS_QEMU_PREFIX.  With REALOS_WARM=1 the VM is one for warm
# reboots instead: -no-shutdown (the workload's poweroff stops the VM, its
# TCP connections stay open) and an HMP monitor on $E2E_TMP/mon-NAME.sock
# (no -no-reboot: it would turn system_reset into an exit).
realos_qemu_start() {
  local name=$1 log=$2 ctl="-monitor none -no-reboot"
  shift 2
  : >"$log"
  [ -z "${REALOS_WARM:-}" ] ||
    ctl="-no-shutdown -monitor unix:$E2E_TMP/mon-$name.sock,server=on,wait=off"
  eval "REALOS_T0_$name=$(date +%s)"
  eval "REALOS_OFF_${name}_1=0"
  ${REALOS_QEMU_PREFIX:-} qemu-system-x86_64 -accel tcg -m 384 -display none \
    $ctl -serial "file:$log" "$@" >"$log.qemu" 2>&1 &
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

# realos_cached_count NBD-URI|IMAGE: lines in /var/boot-count of the root
# partition (partition 2) read through the export (or from an image file:
# qemu-img, shared lock), "none" when the file is absent; the copy must
# pass e2fsck -fn (clean ext4, journal flushed).
realos_cached_count() {
  local uri=$1 d start
  d=$(mktemp -d "$E2E_TMP/export.XXXXXX")
  case $uri in
    *://*) nbdcopy "$uri" "$d/disk.img" || e2e_fail "nbdcopy $uri failed" ;;
    *) # an image file (a VM's qcow2 overlay, maybe open in a stopped qemu)
       qemu-img convert -U -O raw "$uri" "$d/disk.img" || e2e_fail "qemu-img convert $uri failed" ;;
  esac
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

# realos_store_kept FARM SUMS: every store file listed in SUMS (an earlier
# realos_store_sum) is still there, unchanged (a seal may add files).
realos_store_kept() {
  local lost
  lost=$(comm -23 <(echo "$2" | sort) <(realos_store_sum "$1" | sort))
  [ -z "$lost" ] || { echo "$lost"; return 1; }
}

# realos_lan_daemons NET: on the LAN of `e2e_lan NET N 1` and the farm
# $FARM, streamsvc in $E2E_LAN (iSCSI on NET.1:3260, admin NET.1:8001, NBD
# on the UNIX socket $E2E_TMP/nbd.sock for the checks; log ss1.log) and
# bootstrapsvc in $E2E_BS1 at NET.11 (log bs.log), both healthy; server
# ss1 registered.  Both are started by ip netns exec itself (their PIDs
# are in E2E_PIDS) and drop to the diskfarm user `diskfarm init` made.
realos_lan_daemons() {
  local net=$1 t=$E2E_TMP
  "$DISKFARM" --farm "$FARM" bootstrap sync >/dev/null
  "$DISKFARM" --farm "$FARM" server add ss1 --address "$net.1" --admin-port 8001 \
    --iscsi-port 3260 >/dev/null
  [ -z "$(find "$FARM" -perm /o+w)" ] || e2e_fail "the farm has world-writable entries"
  ip netns exec "$E2E_LAN" "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$t/nbd.sock" \
    --iscsi-listen "$net.1:3260" --admin-listen "$net.1:8001" >"$t/ss1.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
  e2e_wait_log "$t/ss1.log" 'iscsi listening' "streamsvc did not start"
  realos_bootstrapsvc "$net" "$t/bs.log"
}

# realos_bootstrapsvc NET LOG [OPTION...]: bootstrapsvc in $E2E_BS1 at
# NET.11 with OPTIONs (-v, so the log names every file it sends), log LOG,
# healthy; its PID in E2E_PIDS and REALOS_BS_PID (stop it before another).
realos_bootstrapsvc() {
  local net=$1 log=$2
  shift 2
  ip netns exec "$E2E_BS1" "$BOOTSTRAPSVC" --farm "$FARM" --address "$net.11" \
    --interface eth0 --health-interval 500 -v "$@" >"$log" 2>&1 &
  REALOS_BS_PID=$!
  E2E_PIDS="$E2E_PIDS $!"
  e2e_wait_log "$log" 'is now healthy' "bootstrapsvc not healthy"
}

# realos_hmp NAME COMMAND...: HMP commands, in order, on the monitor of a
# REALOS_WARM VM.
realos_hmp() {
  python3 - "$E2E_TMP/mon-$1.sock" "${@:2}" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.recv(4096)                      # banner + prompt
for c in sys.argv[2:]:
    s.sendall(c.encode() + b"\n")
    time.sleep(0.3)
s.close()
EOF
}

realos_ends() { grep -ac DISKFARM-WORKLOAD-END "$1" 2>/dev/null || true; }

# realos_warm_reset NAME LOG: system_reset, then cont (after the guest's
# poweroff the VM waits stopped): a warm reboot, nothing closes the old
# OS's TCP connections.  The next boot's serial output starts here.
realos_warm_reset() {
  local name=$1 log=$2 n
  n=$(( $(realos_ends "$log") + 1 ))
  eval "REALOS_OFF_${name}_$n=$(stat -c %s "$log")"
  eval "REALOS_T0_$name=$(date +%s)"
  realos_hmp "$name" system_reset cont
}

# realos_warm_wait NAME LOG N TIMEOUT: wait for the N-th end marker of the
# workload (boot N since power-on); prints the seconds from the reset (or
# power-on) to it; returns 1 at TIMEOUT or when qemu is gone.
realos_warm_wait() {
  local name=$1 log=$2 n=$3 timeout=$4 pid t0 now
  eval "pid=\$REALOS_PID_$name; t0=\$REALOS_T0_$name"
  while :; do
    now=$(date +%s)
    if [ "$(realos_ends "$log")" -ge "$n" ]; then
      echo "$name boot $n: workload end $(( now - t0 )) s after power-on/reset"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "$name: qemu exited"; return 1; }
    [ $(( now - t0 )) -lt "$timeout" ] || { echo "$name boot $n: timed out after $timeout s"; return 1; }
    sleep 0.5
  done
}

# realos_boot_log LOG NAME N OUT: the serial output of NAME's boot N (from
# its power-on or reset on) into OUT.
realos_boot_log() {
  local log=$1 name=$2 n=$3 out=$4 off
  eval "off=\${REALOS_OFF_${name}_$n:-}"
  [ -n "$off" ] || e2e_fail "$log: no boot $n"
  tail -c +$((off + 1)) "$log" | tr -d '\000' >"$out"
}

# realos_records_check RAW START SECTORS LOG: every "DISKFARM-REC <n>" the
# records workload logged on LOG (acknowledged) is intact in /var/records
# of the ext4 root at sector START (SECTORS long) of the flat image RAW:
# record n at block n-1, "REC <n>" padded to 4095 bytes and a newline.
# Fails the test naming the first records missing or corrupt.
realos_records_check() {
  local raw=$1 start=$2 sectors=$3 log=$4 root=$E2E_TMP/records-root.ext4
  dd if="$raw" of="$root" bs=512 skip="$start" count="$sectors" status=none
  debugfs -R "dump /var/records $E2E_TMP/records" "$root" >/dev/null 2>&1
  python3 - "$E2E_TMP/records" "$log" <<'PY' || e2e_fail "records check"
import re, sys
data = open(sys.argv[1], "rb").read()
acked = [int(m) for m in re.findall(rb"^DISKFARM-REC (\d+)", open(sys.argv[2], "rb").read(), re.M)]
bad = [n for n in acked
       if data[(n - 1) * 4096:n * 4096] != (b"REC %d" % n).ljust(4095) + b"\n"]
if bad:
    sys.exit("records missing or corrupt: %s" % bad[:10])
print("all %d acknowledged records present and intact" % len(acked))
PY
}
