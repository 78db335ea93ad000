#!/bin/bash
# e2e (qemu TCG, no network): issue 13 tier 1.  A real Linux VM in cache
# mode hypervisor boots from its qcow2 overlay, whose backing is its
# device export through `streamsvc --relay`, which reads from two stream
# servers of the farm.  The golden image's /sbin/init is replaced by a
# records workload: numbered 4 KiB records written with fsync, each logged
# on the serial console once acknowledged ("DISKFARM-REC <n>"), and between
# records a 64 KiB O_DIRECT read of a disk block not read before, so the
# relay keeps reading upstream.  After record 15 the server the relay reads
# from is killed with SIGKILL.  Pass: the OS runs on without a reboot or
# an I/O error, every acknowledged record is in the overlay, intact, and
# the stall (kill to the next acknowledged record) is printed; goal <= 15 s.
# TIER=3 (test relay-tier3): the device's cache is `server`, on the killed
# server's local disk, and the VM's disk is the device export itself
# through the relay (servers with registry names, so the survivor knows
# whose generation it is).  Pass: after the kill the VM gets I/O errors
# (the relay answers EIO for a writable export whose server died, and
# logs it), no record is acknowledged after the kill (but the one in
# flight), a session of that boot generation on the survivor fails (EIO)
# instead of serving the vDisk without the acknowledged records, and the
# survivor logs the lost cache and counts it in /metrics.
set -eu
TIER=${TIER:-1}
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
e2e_need qemu-system-x86_64 qemu-img debugfs sfdisk python3 bc
[ "$TIER" = 1 ] || e2e_need nbdsh curl
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-400}
RECORDS=60
KILL_AT=15
realos_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

realos_images "$T/img" small
IMG=$T/img/golden-small.img

# ---- the records workload as the image's /sbin/init ---------------------------
cat >"$T/init" <<INIT
#!/bin/busybox sh
# diskfarm e2e relay-failover records workload
export PATH=/bin
out() { echo "\$*" >/dev/ttyS0; }
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/ttyS0 ] || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / 2>/dev/null
out "DISKFARM-ROOT-UP \$(uname -r)"
: >/var/records; sync
i=1
while [ \$i -le $RECORDS ]; do
  if printf '%-4095s\n' "REC \$i" |
     dd of=/var/records bs=4096 seek=\$((i - 1)) conv=notrunc,fsync 2>/tmp/dd.err; then
    out "DISKFARM-REC \$i"
  else
    out "DISKFARM-REC-FAIL \$i \$(cat /tmp/dd.err)"
  fi
  dd if=/dev/sda of=/dev/null bs=65536 skip=\$((200 + i * 9)) count=1 iflag=direct 2>/tmp/rd.err ||
    out "DISKFARM-READ-FAIL \$i \$(cat /tmp/rd.err)"
  i=\$((i + 1))
done
out "DISKFARM-IOERR \$(dmesg | grep -ciE 'I/O error|blk_update|buffer i/o')"
dmesg | grep -iE 'I/O error|blk_update|buffer i/o|ata.*(error|fail)' | while read -r l; do out "DISKFARM-KLOG \$l"; done
mount -o remount,ro / 2>/dev/null; sync
out "DISKFARM-WORKLOAD-END"
poweroff -f
INIT
# partition 2 (the ext4 root): out, write the new init with debugfs, back in
read -r start sectors < <(sfdisk -J "$IMG" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][1]
print(p["start"], p["size"])')
dd if="$IMG" of="$T/root.ext4" bs=512 skip="$start" count="$sectors" status=none
debugfs -w -R "rm /sbin/init" "$T/root.ext4" >/dev/null 2>&1
debugfs -w -f - "$T/root.ext4" >"$T/debugfs.log" 2>&1 <<DBG
cd /sbin
write $T/init init
set_inode_field /sbin/init mode 0100755
DBG
debugfs -R "cat /sbin/init" "$T/root.ext4" 2>/dev/null | grep -q "relay-failover records" ||
  { cat "$T/debugfs.log"; e2e_fail "the records init is not in the image"; }
dd if="$T/root.ext4" of="$IMG" bs=512 seek="$start" conv=notrunc status=none

df init >/dev/null
df vdisk import golden "$IMG" >/dev/null
if [ "$TIER" = 3 ]; then
  df device add hv01 --mac 52:54:00:13:00:01 --vdisk golden --cache server >/dev/null
else
  df device add hv01 --mac 52:54:00:13:00:01 --vdisk golden --cache hypervisor >/dev/null
fi

# ---- two stream servers, one relay -----------------------------------------------
declare -A PID PORT
names=()
for s in A B; do
  [ "$TIER" = 3 ] && names=(--server-name "ss$s" --server-address 127.0.0.1)
  "$STREAMSVC" --farm "$FARM" --nbd-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    "${names[@]}" >"$T/ss$s.log" 2>&1 &
  PID[$s]=$!
  E2E_PIDS="$E2E_PIDS $!"
  for _ in $(seq 100); do
    grep -q "nbd listening on 127.0.0.1:" "$T/ss$s.log" && break
    sleep 0.1
  done
  PORT[$s]=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/ss$s.log" | sed 's/.*://')
  [ -n "${PORT[$s]}" ] || e2e_fail "streamsvc $s did not start: $(cat "$T/ss$s.log")"
done
RSOCK=$T/relay.sock
"$STREAMSVC" --relay --nbd-listen "unix:$RSOCK" --upstream "127.0.0.1:${PORT[A]}" \
  --upstream "127.0.0.1:${PORT[B]}" --relay-stall 15 --relay-timeout 5 >"$T/relay.log" 2>&1 &
RELAY=$!
E2E_PIDS="$E2E_PIDS $RELAY"
for _ in $(seq 100); do [ -S "$RSOCK" ] && break; sleep 0.1; done
[ -S "$RSOCK" ] || e2e_fail "the relay did not start: $(cat "$T/relay.log")"

LOG=$T/serial-hv01.log
if [ "$TIER" = 3 ]; then
  realos_qemu_start hv01 "$LOG" -boot c -nic none \
    -drive "file=nbd+unix:///device/hv01?socket=$RSOCK,format=raw,if=ide,cache=none"
else
  qemu-img create -q -f qcow2 -F raw -b "nbd+unix:///device/hv01?socket=$RSOCK" "$T/hv01.qcow2" ||
    e2e_fail "qemu-img create the overlay through the relay"
  realos_qemu_start hv01 "$LOG" -boot c -nic none -drive "file=$T/hv01.qcow2,format=qcow2,if=ide"
fi

# ---- tier 3: the checks after the kill ------------------------------------------------
tier3_checks() {
  local survivor=A n=0 acked_after
  [ "$victim" = A ] && survivor=B
  while ! grep -aqE "^DISKFARM-(REC|READ)-FAIL|^DISKFARM-IOERR" "$LOG"; do
    [ "$n" -lt 1200 ] || { realos_dump "$LOG"; tail -20 "$T/relay.log" "$T/ss$survivor.log"; e2e_fail "no I/O error in the VM 120 s after the kill"; }
    kill -0 "$REALOS_PID_hv01" 2>/dev/null || break
    sleep 0.1; n=$((n + 1))
  done
  printf 'first I/O error in the VM %.2f s after kill -9: %s\n' "$(echo "$(date +%s.%N) - $tkill" | bc)" \
    "$(grep -aE "^DISKFARM-(REC|READ)-FAIL|^DISKFARM-IOERR" "$LOG" | head -1 | cut -c1-120)"
  sleep 5 # what the VM still says
  acked_after=$(( $(grep -ac "^DISKFARM-REC [0-9]" "$LOG") - acked_before ))
  [ "$acked_after" -le 1 ] || { realos_dump "$LOG"; e2e_fail "$acked_after records acknowledged after the kill: served from an empty cache"; }
  grep -q "writable export, its unflushed writes were on that server: EIO" "$T/relay.log" ||
    { tail -20 "$T/relay.log"; e2e_fail "the relay did not log the writable export's lost upstream"; }
  # a new session of that boot generation, on the survivor: EIO, logged, counted
  nbdsh -u "nbd://127.0.0.1:${PORT[$survivor]}/device/hv01" -c 'h.pread(4096, 0)' >"$T/read.log" 2>&1 &&
    e2e_fail "a read of hv01 through the survivor returned data (the vDisk without its cache)"
  grep -qi "input/output error\|EIO" "$T/read.log" || { cat "$T/read.log"; e2e_fail "the survivor's refusal is not EIO"; }
  grep -q "write cache on server ss$victim's local disk" "$T/ss$survivor.log" ||
    { tail -20 "$T/ss$survivor.log"; e2e_fail "the survivor did not log the lost cache"; }
  local admin
  admin=$(grep -o 'admin listening on http://[0-9.:]*' "$T/ss$survivor.log" | head -1 | sed 's|.*http://||')
  curl -sf "http://$admin/metrics" | grep -q "^diskfarm_cache_lost_total [1-9]" ||
    e2e_fail "the survivor's /metrics does not count the lost cache"
  e2e_pass "tier 3: kill -9 of the server holding hv01's local cache: the VM gets I/O errors from the relay ($acked_after record(s) acknowledged after the kill, the one in flight at most); a session on the survivor fails (EIO), logged and counted"
}

# ---- kill -9 the relay's server after record KILL_AT ------------------------------
t0=$(date +%s)
while ! grep -q "^DISKFARM-REC $KILL_AT\b" "$LOG" 2>/dev/null; do
  kill -0 "$REALOS_PID_hv01" 2>/dev/null || { realos_dump "$LOG"; e2e_fail "qemu exited before record $KILL_AT"; }
  [ $(( $(date +%s) - t0 )) -lt "$BOOT_TIMEOUT" ] || { realos_dump "$LOG"; e2e_fail "no record $KILL_AT in $BOOT_TIMEOUT s"; }
  sleep 0.2
done
port=$(grep -o 'relay: export device/hv01: upstream 127.0.0.1:[0-9]*' "$T/relay.log" | tail -1 | sed 's/.*://')
victim=A; [ "$port" = "${PORT[B]}" ] && victim=B
acked_before=$(grep -c "^DISKFARM-REC [0-9]" "$LOG")
kill -9 "${PID[$victim]}"
tkill=$(date +%s.%N)
echo "kill -9 of server $victim (port $port) after $acked_before acknowledged records"
[ "$TIER" = 3 ] && { tier3_checks; exit 0; }
next=$((acked_before + 1))
while ! grep -q "^DISKFARM-REC $next\b" "$LOG"; do
  kill -0 "$REALOS_PID_hv01" 2>/dev/null || { realos_dump "$LOG"; e2e_fail "the VM stopped after the kill"; }
  [ "$(echo "$(date +%s.%N) - $tkill > 120" | bc)" = 0 ] || { realos_dump "$LOG"; tail -20 "$T/relay.log"; e2e_fail "no acknowledged record 120 s after the kill"; }
  sleep 0.05
done
stall=$(echo "$(date +%s.%N) - $tkill" | bc)
printf 'stall: %.2f s from kill -9 to the next acknowledged record (goal <= 15 s)\n' "$stall"
realos_qemu_wait hv01 "$LOG" "$BOOT_TIMEOUT" || { realos_dump "$LOG"; e2e_fail "no workload end marker"; }

# ---- the checks ---------------------------------------------------------------------------
grep -q "DISKFARM-ROOT-UP" "$LOG" || e2e_fail "no root"
[ "$(grep -c "DISKFARM-ROOT-UP" "$LOG")" = 1 ] || e2e_fail "the VM rebooted"
! grep -aE "DISKFARM-(REC|READ)-FAIL" "$LOG" || e2e_fail "a record or a read failed in the VM"
grep -aq "^DISKFARM-IOERR 0" "$LOG" || { grep -a "DISKFARM-IOERR\|KLOG" "$LOG"; e2e_fail "kernel I/O errors"; }
acked=$(grep -ac "^DISKFARM-REC [0-9]" "$LOG")
[ "$acked" = "$RECORDS" ] || e2e_fail "$acked of $RECORDS records acknowledged"
grep -q "replayed on" "$T/relay.log" || { tail -20 "$T/relay.log"; e2e_fail "no replay in the relay's log"; }
grep -o "replayed on .*" "$T/relay.log" | head -3 | sed 's/^/  relay: /'
# the overlay's root (its backing through the relay, on the survivor)
qemu-img convert -f qcow2 -O raw "$T/hv01.qcow2" "$T/flat.raw" || e2e_fail "flatten the overlay"
realos_records_check "$T/flat.raw" "$start" "$sectors" "$LOG"
e2e_pass "VM on the relay survived kill -9 of its stream server: no reboot, no I/O error, every record intact, stall $(printf %.2f "$stall") s"
