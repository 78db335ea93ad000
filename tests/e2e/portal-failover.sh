#!/bin/bash
# e2e (qemu TCG, network namespaces made here): issue 13, tier 2 for an
# iBFT-booted target.  A real Linux boots over iSCSI from server s1's
# floating portal, its root in cache mode server-persistent on a shared
# cache directory; s1's streamsvc is killed with SIGKILL while the OS
# writes; s2's keepalived adopts s1's portal, s2 takes the cache's lease
# over once it lapsed, and the OS's iscsid logs in again on the same
# address: the OS runs on.  Both servers are healthy at boot: the boot
# script of a device whose cache persists names one server (iPXE's
# multipath sanboot would log in on both).
#
#   netns LAN: bridge br0 10.83.0.1, dnsmasq (site DHCP), tap0 -> qemu
#   netns BS1: PostgreSQL (the farm DB both servers use) and bootstrapsvc
#              (ProxyDHCP, HTTP boot scripts) at 10.83.0.11
#   netns BS2, BS3: servers s1 (10.83.0.12, portal .112) and s2 (.13,
#              portal .113): streamsvc each (own farm directory, one store
#              and one --shared-cache-dir: plain directories standing for
#              NFS; --lease-time 3000; iSCSI on 0.0.0.0:3260 so it accepts
#              on a portal it adopts), keepalived each from `diskfarm
#              server portal-config` (own config and pid files)
#
# The golden image (small flavour) gets a records workload as /sbin/init
# (relay-failover.sh's: numbered 4 KiB records with fsync, each logged on
# the serial console once acknowledged, "DISKFARM-REC <n>"; a 64 KiB
# O_DIRECT read between records), which first starts open-iscsi's iscsid
# from the root (as Debian's iscsid.service does: without it nobody logs
# in again after a connection error) with a tmpfs on /run and the
# initiator settings of the image-preparation guide (README "Making a
# golden image stream-ready") in /etc/iscsi/iscsid.conf.
# After record 15: kill -9 s1's streamsvc (its keepalived stays: its
# track script fails, it gives the portal up).  Pass: no reboot, no
# kernel I/O error, no failed record, every acknowledged record intact in
# the cache (read through s2 with nbdcopy), s2 logged the OS in and holds
# a newer lease epoch; the stall (kill to the next acknowledged record) is
# printed, goal <= 15 s.
# Root only; 77 without qemu, dnsmasq, keepalived, PostgreSQL, iscsid.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
. "$(dirname "$0")/../lib/pg.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
e2e_need ip dnsmasq qemu-system-x86_64 keepalived curl nbdcopy debugfs sfdisk python3 bc psql setsid
[ -f /usr/lib/ipxe/undionly.kpxe ] || e2e_skip "ipxe package missing"
[ -x /sbin/iscsid ] || e2e_skip "open-iscsi's iscsid missing"
[ -x /usr/bin/curl ] || e2e_skip "the track script runs /usr/bin/curl"
pg_bindir >/dev/null || e2e_skip "PostgreSQL is not installed"
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-500}
RECORDS=60
KILL_AT=15
PACE=0.5    # seconds between records: the run outlasts the kill
TTL=3000
realos_init
T=$E2E_TMP
NET=10.83.0
e2e_lan $NET 1 3
INFRA=$E2E_BS1
NS1=$E2E_BS2 NS2=$E2E_BS3
ip_of() { echo "$NET.1$(( $1 + 1 ))"; }      # server N's own address
portal_of() { echo "$NET.11$(( $1 + 1 ))"; } # server N's portal
ns_of() { eval "echo \$NS$1"; }

# ---- PostgreSQL in the infrastructure namespace --------------------------
PGD=$T/pg
# the cleanup: daemons and VM by PID (e2e_cleanup), PostgreSQL by its
# data directory, then the namespaces
trap 'pg_lan_down "$PGD" immediate 2>/dev/null || true; e2e_cleanup' EXIT
pg_lan_start "$INFRA" "$NET.11" 60 "$PGD" || e2e_fail "PostgreSQL in $INFRA"
DB=$PG_LAN_DB
dfs() { local n=$1; shift; ip netns exec "$(ns_of "$n")" "$DISKFARM" --farm "$T/f$n" --db "$DB" "$@"; }

# ---- the golden image with the records workload and iscsid -----------------
realos_images "$T/img" small
IMG=$T/img/golden-small.img
cat >"$T/init" <<INIT
#!/bin/busybox sh
# diskfarm e2e portal-failover records workload
export PATH=/bin:/sbin
out() { echo "\$*" >/dev/ttyS0; }
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/ttyS0 ] || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / 2>/dev/null
# iscsid must never wait for the disk it recovers: its lock and pid
# files on a tmpfs, itself locked in memory (it does mlockall)
mount -t tmpfs tmpfs /run
mkdir -p /run/lock/iscsi
out "DISKFARM-ROOT-UP \$(uname -r)"
/sbin/iscsid -f -n >/dev/ttyS0 2>&1 &
out "DISKFARM-ISCSID \$!"
# its session sync takes the iBFT session over in the background
sleep 3
iscsi_state() { # WHEN
  for c in /sys/class/iscsi_connection/*; do
    out "DISKFARM-ISCSI-CONN \$1 \${c##*/} noop_out_interval=\$(cat "\$c/recv_tmo") noop_out_timeout=\$(cat "\$c/ping_tmo") portal=\$(cat "\$c/persistent_address")"
  done
  for s in /sys/class/iscsi_session/*; do
    out "DISKFARM-ISCSI-SESSION \$1 \${s##*/} recovery_tmo=\$(cat "\$s/recovery_tmo")"
  done
}
iscsi_state before
: >/var/records; sync
i=1
while [ \$i -le $RECORDS ]; do
  if printf '%-4095s\n' "REC \$i" |
     dd of=/var/records bs=4096 seek=\$((i - 1)) conv=notrunc,fsync 2>/tmp/dd.err; then
    out "DISKFARM-REC \$i"
  else
    out "DISKFARM-REC-FAIL \$i \$(cat /tmp/dd.err)"
  fi
  sleep $PACE
  dd if=/dev/sda of=/dev/null bs=65536 skip=\$((200 + i * 9)) count=1 iflag=direct 2>/tmp/rd.err ||
    out "DISKFARM-READ-FAIL \$i \$(cat /tmp/rd.err)"
  i=\$((i + 1))
done
iscsi_state after
out "DISKFARM-IOERR \$(dmesg | grep -ciE 'I/O error|blk_update|buffer i/o')"
dmesg | grep -iE 'I/O error|blk_update|buffer i/o|iscsi|connection[0-9:]*' | while read -r l; do out "DISKFARM-KLOG \$l"; done
mount -o remount,ro / 2>/dev/null; sync
out "DISKFARM-WORKLOAD-END"
poweroff -f
INIT
# The initiator settings of the image-preparation guide: iscsid takes
# them for the iBFT session it syncs (no node record: iscsid.conf's
# defaults and the negotiated values).
cat >"$T/iscsid.conf" <<'CONF'
node.session.timeo.replacement_timeout = 60
node.conn[0].timeo.noop_out_interval = 2
node.conn[0].timeo.noop_out_timeout = 5
node.conn[0].timeo.login_timeout = 15
CONF
echo "InitiatorName=iqn.2026-11.org.diskfarm:initiator-unset" >"$T/initiatorname.iscsi"
# iscsid authorizes its management socket's peers by user name (root)
echo "root:x:0:0:root:/:/bin/sh" >"$T/passwd"
echo "root:x:0:" >"$T/group"
# partition 2 (the ext4 root): out, add files with debugfs, back in
read -r start sectors < <(sfdisk -J "$IMG" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][1]
print(p["start"], p["size"])')
dd if="$IMG" of="$T/root.ext4" bs=512 skip="$start" count="$sectors" status=none
{
  echo "rm /sbin/init"
  echo "cd /sbin"
  echo "write $T/init init"
  echo "set_inode_field /sbin/init mode 0100755"
  echo "write /sbin/iscsid iscsid"
  echo "set_inode_field /sbin/iscsid mode 0100755"
  # (debugfs's mkdir takes a name in the current directory)
  echo "cd /etc"
  echo "write $T/passwd passwd"
  echo "write $T/group group"
  echo "mkdir iscsi"
  echo "cd /etc/iscsi"
  echo "write $T/iscsid.conf iscsid.conf"
  echo "write $T/initiatorname.iscsi initiatorname.iscsi"
  echo "mkdir nodes"
  echo "mkdir send_targets"
  # iscsid's shared libraries, at the paths its loader looks in
  made=" "
  for lib in $(ldd /sbin/iscsid | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'); do
    d=$(dirname "$lib") p=""
    for part in $(echo "${d#/}" | tr / ' '); do
      p="$p/$part"
      case $made in
        *" $p "*) ;;
        *) echo "cd $(dirname "$p")"; echo "mkdir $part"; made="$made$p " ;;
      esac
    done
    echo "cd $d"
    echo "write $(readlink -f "$lib") $(basename "$lib")"
    echo "set_inode_field $lib mode 0100755"
  done
} >"$T/debugfs.cmds"
debugfs -w -f "$T/debugfs.cmds" "$T/root.ext4" >"$T/debugfs.log" 2>&1
for f in /sbin/init /sbin/iscsid /etc/iscsi/iscsid.conf /lib64/ld-linux-x86-64.so.2; do
  debugfs -R "stat $f" "$T/root.ext4" 2>/dev/null | grep -q "Inode:" ||
    { cat "$T/debugfs.log"; e2e_fail "$f is not in the image"; }
done
debugfs -R "cat /sbin/init" "$T/root.ext4" 2>/dev/null | grep -q "portal-failover records" ||
  e2e_fail "the records init is not in the image"
dd if="$T/root.ext4" of="$IMG" bs=512 seek="$start" conv=notrunc status=none

# ---- farm: two servers, one DB, one store, one shared cache directory -------
for n in 1 2; do dfs $n init >/dev/null || e2e_fail "init on s$n"; done
rm -rf "$T/f2/store"
ln -s ../f1/store "$T/f2/store"
dfs 1 vdisk import golden "$IMG" >/dev/null
rm -f "$IMG"
dfs 1 bootstrap sync >/dev/null
dfs 1 device add pc01 --mac 52:54:00:83:00:01 --vdisk golden --cache server-persistent >/dev/null
for n in 1 2; do
  dfs 1 server add "s$n" --address "$(ip_of $n)" --portal "$(portal_of $n)" \
    --admin-port 8001 >/dev/null
done
SHARED=$T/shared
mkdir "$SHARED"
chown diskfarm: "$SHARED" 2>/dev/null || true

start_ss() { # N
  local n=$1 a; a=$(ip_of "$1")
  ip netns exec "$(ns_of "$n")" "$STREAMSVC" --farm "$T/f$n" --db "$DB" \
    --nbd-listen "$a:10809" --iscsi-listen 0.0.0.0:3260 --admin-listen "$a:8001" \
    --server-name "s$n" --server-address "$a" --heartbeat-interval 1000 \
    --shared-cache-dir "$SHARED" --lease-time $TTL >>"$T/s$n.log" 2>&1 &
  eval "PID_s$n=$!"
  E2E_PIDS="$E2E_PIDS $!"
  for _ in $(seq 150); do
    grep -q "registry: registered as streamsvc s$n" "$T/s$n.log" && return
    sleep 0.1
  done
  cat "$T/s$n.log"; e2e_fail "s$n did not register"
}
start_keepalived() { # N: keepalived on server N from its generated config
  local n=$1
  dfs "$n" server portal-config "s$n" --interface eth0 >"$T/k$n.conf" ||
    e2e_fail "portal-config s$n"
  mkdir -p "$T/ka$n"
  ip netns exec "$(ns_of "$n")" keepalived -f "$T/k$n.conf" -n -l -D --vrrp \
    -p "$T/ka$n/keepalived.pid" -r "$T/ka$n/vrrp.pid" >"$T/ka$n.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
}
holds() { ip -n "$(ns_of "$1")" -4 -o addr show dev eth0 | grep -q " $2/"; }
wait_holds() { # N ADDR SECONDS
  for _ in $(seq $(( $3 * 10 ))); do holds "$1" "$2" && return 0; sleep 0.1; done
  return 1
}
# Both servers healthy at boot.  The device's cache persists, so its boot
# script names one server (the least loaded; on a tie the first by name,
# s1): iPXE's multipath sanboot would log in on every URI at once and the
# servers would contend for the cache's lease.
for n in 1 2; do
  start_ss $n
  dfs 1 server show s$n | grep -q "$(portal_of $n)" || e2e_fail "s$n's registration lost its portal"
  start_keepalived $n
  wait_holds $n "$(portal_of $n)" 20 || { tail -20 "$T/ka$n.log"; e2e_fail "s$n never took its portal"; }
done
echo "portals: s1 holds $(portal_of 1), s2 holds $(portal_of 2)"

# bootstrapsvc (infrastructure host): s1 and s2 healthy
ip netns exec "$INFRA" "$BOOTSTRAPSVC" --farm "$T/f1" --db "$DB" --address "$NET.11" \
  --interface eth0 --health-interval 500 -v >"$T/bs.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
for n in 1 2; do
  for _ in $(seq 150); do grep -q "stream server s$n is now healthy" "$T/bs.log" && break; sleep 0.1; done
  grep -q "stream server s$n is now healthy" "$T/bs.log" || { cat "$T/bs.log"; e2e_fail "bootstrapsvc: s$n not healthy"; }
done
ip netns exec "$INFRA" curl -sS "http://$NET.11/boot.ipxe?mac=52:54:00:83:00:01" -o "$T/script"
grep '^sanboot' "$T/script"
grep -q "^sanboot iscsi:$(portal_of 1)::3260:1:iqn.2026-11.org.diskfarm:pc01 || goto failed" "$T/script" ||
  { cat "$T/script"; e2e_fail "the boot script of a persistent-cache device does not name s1's portal alone"; }

# ---- boot, records, kill -9 ------------------------------------------------------
LOG=$T/serial-pc01.log
REALOS_QEMU_PREFIX="ip netns exec $E2E_LAN"
realos_qemu_start pc01 "$LOG" -boot n \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device e1000,netdev=n0,mac=52:54:00:83:00:01
dump_all() {
  realos_dump "$LOG"
  for f in s1 s2 ka1 ka2 bs; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
}
t0=$(date +%s)
while ! grep -aq "^DISKFARM-REC $KILL_AT\b" "$LOG" 2>/dev/null; do
  kill -0 "$REALOS_PID_pc01" 2>/dev/null || { dump_all; e2e_fail "qemu exited before record $KILL_AT"; }
  [ $(( $(date +%s) - t0 )) -lt "$BOOT_TIMEOUT" ] || { dump_all; e2e_fail "no record $KILL_AT in $BOOT_TIMEOUT s"; }
  sleep 0.2
done
echo "record $KILL_AT $(( $(date +%s) - t0 )) s after power-on"
grep -a "DISKFARM-ISCSI" "$LOG" | tr -d '\r'
grep -aq "DISKFARM-ISCSI-CONN before .* portal=$(portal_of 1)\b" "$LOG" ||
  { dump_all; e2e_fail "the OS's session is not on s1's portal"; }
grep -aq "iscsid: peeruser_unix\|iscsid: .*could not" "$LOG" &&
  { grep -a "iscsid:" "$LOG"; e2e_fail "iscsid did not take the boot session over"; }
os_logins() { grep -c "iSCSI login: .*pc01" "$T/s$1.log" || true; }
[ "$(os_logins 1)" -ge 2 ] || { grep "iSCSI login" "$T/s1.log"; e2e_fail "iPXE's and the OS's logins are not on s1"; }
s2_before=$(os_logins 2)
epoch_before=$(cut -d' ' -f1 "$SHARED/pc01/lease.epoch")
acked_before=$(grep -ac "^DISKFARM-REC [0-9]" "$LOG")
kill -9 "$PID_s1"
tkill=$(date +%s.%N)
echo "kill -9 of s1's streamsvc after $acked_before acknowledged records (lease epoch $epoch_before)"
next=$((acked_before + 1))
while ! grep -aq "^DISKFARM-REC $next\b" "$LOG"; do
  kill -0 "$REALOS_PID_pc01" 2>/dev/null || { dump_all; e2e_fail "the VM stopped after the kill"; }
  [ "$(echo "$(date +%s.%N) - $tkill > 150" | bc)" = 0 ] ||
    { dump_all; e2e_fail "no acknowledged record 150 s after the kill"; }
  if [ -z "${tportal:-}" ] && holds 2 "$(portal_of 1)"; then
    tportal=$(echo "$(date +%s.%N) - $tkill" | bc)
  fi
  sleep 0.05
done
stall=$(echo "$(date +%s.%N) - $tkill" | bc)
[ -n "${tportal:-}" ] && printf 'portal: s2 held s1'"'"'s portal %.2f s after the kill\n' "$tportal"
printf 'stall: %.2f s from kill -9 to the next acknowledged record (goal <= 15 s)\n' "$stall"
realos_qemu_wait pc01 "$LOG" "$BOOT_TIMEOUT" || { dump_all; e2e_fail "no workload end marker"; }

# ---- the checks --------------------------------------------------------------------
[ "$(grep -ac "DISKFARM-ROOT-UP" "$LOG")" = 1 ] || e2e_fail "the OS rebooted"
! grep -aE "DISKFARM-(REC|READ)-FAIL" "$LOG" || e2e_fail "a record or a read failed in the OS"
grep -aq "^DISKFARM-IOERR 0" "$LOG" || { grep -a "DISKFARM-IOERR\|KLOG" "$LOG"; e2e_fail "kernel I/O errors"; }
acked=$(grep -ac "^DISKFARM-REC [0-9]" "$LOG")
[ "$acked" = "$RECORDS" ] || e2e_fail "$acked of $RECORDS records acknowledged"
holds 2 "$(portal_of 1)" || e2e_fail "s2 does not hold s1's portal"
! holds 1 "$(portal_of 1)" || e2e_fail "s1's host still holds its portal with its streamsvc dead"
[ "$(os_logins 2)" -gt "$s2_before" ] || { tail -20 "$T/s2.log"; e2e_fail "the OS did not log in on s2"; }
grep -a "DISKFARM-ISCSI\|iscsid:" "$LOG" | tr -d '\r' | sed 's/^/  os: /'
grep -a "DISKFARM-KLOG .*connection" "$LOG" | tr -d '\r' | head -5 | sed 's/^/  os: /'
grep -aq "iscsid: .*operational after recovery" "$LOG" ||
  e2e_fail "no 'operational after recovery' from the OS's iscsid"
grep -aq "DISKFARM-ISCSI-CONN after .* noop_out_interval=2 noop_out_timeout=5 portal=$(portal_of 1)\b" "$LOG" ||
  e2e_fail "the recovered connection does not have iscsid.conf's NOP-Out settings"
grep "pc01" "$T/s2.log" | grep -i "lease\|login" | head -4 | sed 's/^/  s2: /'
# the cache through the survivor: every acknowledged record intact
ip netns exec "$NS2" nbdcopy "nbd://$(ip_of 2)/device/pc01" "$T/flat.raw" ||
  e2e_fail "nbdcopy of pc01's cache through s2"
epoch_after=$(cut -d' ' -f1 "$SHARED/pc01/lease.epoch")
[ "$epoch_after" -gt "$epoch_before" ] || e2e_fail "the lease epoch did not move ($epoch_before -> $epoch_after)"
realos_records_check "$T/flat.raw" "$start" "$sectors" "$LOG"
e2e_pass "iBFT-booted OS survived kill -9 of its stream server: portal adopted by s2, lease taken over, no reboot, no I/O error, every record intact, stall $(printf %.2f "$stall") s"
