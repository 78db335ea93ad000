#!/bin/bash
# e2e (qemu TCG, network namespaces made here): warm reboots of a real OS
# whose root is on iSCSI through iBFT, for every cache mode (hypervisor:
# a local overlay), with bootstrapsvc in the loop.  Each VM PXE-boots (NIC ROM iPXE ->
# ProxyDHCP -> boot.ipxe -> sanboot -> the small initramfs logs in again
# from the iBFT -> ext4 root -> the workload, tests/e2e/lib/make-golden-linux.sh),
# the workload powers off, and qemu (-no-shutdown) is reset from its
# monitor (system_reset): nothing closes the old OS's iSCSI connection, as
# when a real machine resets.  Each VM is reset twice in a row:
#   wr01 server             boots count 1 1 1 (each boot.ipxe fetch starts a
#                           new boot generation: a clean root)
#   wr02 ram:4              1 1 1; the 32 MiB workload overflows the 4 MiB
#                           of RAM to the server disk and reads back right
#   wr03 server-persistent  1 2 3; then `device reset --discard` and a third
#                           reset: 1 (a clean root again)
#   wr04 private            1 2 3 (the device's own permanent layer)
#   mt01 maintenance        on `version new golden`: boots once (1); then
#                           `version seal golden` makes its writes version 1
#   ts01 test               boots version 1 (state test after the seal) and
#                           sees the maintenance boot's line: 2
#   hv01 hypervisor         no PXE: the VM's own qcow2 overlay whose
#                           backing is device/hv01 (the version, read-only)
#                           on IDE; the initramfs finds no iBFT and mounts
#                           the local disk: 1 2 3 (the overlay is the VM's);
#                           device/hv01 never holds a counter
# After each VM's first boot its writes are in its cache only (read
# through device/<name>), vdisk/golden holds no counter file, and the
# store files stay unchanged (the seal adds one).  No boot may log a
# kernel I/O, SCSI or iSCSI error, and at the end streamsvc holds at most
# one connection per VM from its last boot (the OS's).
# VMs run $REALOS_PARALLEL at a time (default: one per core); REALOS_ONLY="wr03 ..."
# boots only those (while developing).
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
e2e_need ip dnsmasq qemu-system-x86_64 nbdcopy debugfs e2fsck sfdisk bc python3 ss
[ -f /usr/lib/ipxe/undionly.kpxe ] || e2e_skip "ipxe package missing"
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-360}
# TCG is CPU bound: one VM per core (4 at once on 2 cores starve the guests
# into RCU stalls and past the boot timeout)
PARALLEL=${REALOS_PARALLEL:-$(nproc)}
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

# name mac cache type (WANT below: the boot counter each boot must print)
VMS="wr01,52:54:00:79:00:01,server,production
wr02,52:54:00:79:00:02,ram:4,production
mt01,52:54:00:79:00:05,server,maintenance
wr03,52:54:00:79:00:03,server-persistent,production
wr04,52:54:00:79:00:04,private,production
ts01,52:54:00:79:00:06,server,test
hv01,52:54:00:79:00:07,hypervisor,production"
NVMS=$(echo "$VMS" | wc -l)
e2e_need qemu-img

e2e_lan 10.79.0 "$NVMS" 1
LAN=$E2E_LAN
realos_images "$T/img" small

df init >/dev/null
df vdisk import golden "$T/img/golden-small.img" >/dev/null
rm -f "$T/img/golden-small.img"
declare -A MAC TAP WANT
i=0
while IFS=, read -r name mac cache type; do
  df device add "$name" --mac "$mac" --vdisk golden --cache "$cache" --type "$type" >/dev/null
  MAC[$name]=$mac TAP[$name]=tap$i
  i=$((i + 1))
done <<<"$VMS"
WANT[wr01]="1 1 1" WANT[wr02]="1 1 1" WANT[wr03]="1 2 3 1" WANT[wr04]="1 2 3"
WANT[mt01]="1" WANT[ts01]="2" WANT[hv01]="1 2 3"
store0=$(realos_store_sum "$FARM")
df version new golden >/dev/null
realos_lan_daemons 10.79.0

REALOS_QEMU_PREFIX="ip netns exec $LAN"
REALOS_WARM=1
log() { echo "$T/serial-$1.log"; }
vm_start() { # NAME
  if [ "$1" = hv01 ]; then # the hypervisor's overlay over the device export
    qemu-img create -q -f qcow2 -F raw \
      -b "nbd+unix:///device/hv01?socket=$T/nbd.sock" "$T/hv01.qcow2"
    realos_qemu_start hv01 "$(log hv01)" -boot c -nic none \
      -drive "file=$T/hv01.qcow2,format=qcow2,if=ide"
    return
  fi
  realos_qemu_start "$1" "$(log "$1")" -boot n \
    -netdev "tap,id=n0,ifname=${TAP[$1]},script=no,downscript=no" \
    -device "e1000,netdev=n0,mac=${MAC[$1]}"
}
diagnose() { # NAME N
  realos_dump "$(log "$1")"
  for f in bs ss1 dnsmasq; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
}
vm_wait() { # NAME N
  realos_warm_wait "$1" "$(log "$1")" "$2" "$BOOT_TIMEOUT" ||
    { diagnose "$1"; e2e_fail "$1 boot $2: no workload end marker"; }
  realos_boot_log "$(log "$1")" "$1" "$2" "$T/boot-$1-$2.log"
}
export_count() { realos_cached_count "nbd+unix:///$1?socket=$T/nbd.sock"; }
want() { echo "${WANT[$1]}" | cut -d' ' -f"$2"; }

# Before a VM's boot N (N > 1): what the console does between its boots.
before_boot() { # NAME N
  case $1.$2 in
    wr03.4) df device reset wr03 --discard >/dev/null ;;
  esac
}
# After a VM's boot N: its log is clean, its counter is right, and after
# boot 1 its writes are where its mode keeps them.
after_boot() { # NAME N
  local name=$1 n=$2 c
  realos_check_boot "$T/boot-$name-$n.log" "$(want "$name" "$n")"
  if [ "$name" = hv01 ]; then
    c=$(realos_cached_count "$T/hv01.qcow2")
    [ "$c" = "$n" ] || e2e_fail "hv01: its overlay holds $c boot lines after boot $n"
    [ "$(export_count device/hv01)" = none ] || e2e_fail "hv01: the OS's writes reached device/hv01"
    return 0
  fi
  [ "$(grep -c "boot.ipxe for $name " "$T/bs.log" || true)" -ge "$n" ] ||
    e2e_fail "$name boot $n: boot.ipxe not fetched through bootstrapsvc"
  [ "$n" = 1 ] || return 0
  case $name in
    mt01) return 0 ;;  # its writes go to the maintenance version (sealed below)
  esac
  c=$(export_count "device/$name")
  [ "$c" = "$(want "$name" 1)" ] || e2e_fail "$name: device/$name holds $c boot lines, want $(want "$name" 1)"
}

# group NAME...: boot the VMs together, reset each after each boot until
# it has booted as often as WANT says.
group() {
  local n=1 more name
  for name in "$@"; do vm_start "$name"; done
  while :; do
    more=
    for name in "$@"; do
      [ "$(echo "${WANT[$name]}" | wc -w)" -ge "$n" ] || continue
      vm_wait "$name" "$n"
      after_boot "$name" "$n"
    done
    n=$((n + 1))
    for name in "$@"; do
      [ "$(echo "${WANT[$name]}" | wc -w)" -ge "$n" ] || continue
      before_boot "$name" "$n"
      realos_warm_reset "$name" "$(log "$name")"
      more=1
    done
    [ -n "$more" ] || break
  done
  for name in "$@"; do
    eval "kill \$REALOS_PID_$name" 2>/dev/null || true
    eval "wait \$REALOS_PID_$name" 2>/dev/null || true
  done
}

# The test device boots the version sealed from the maintenance boot: a
# later group.
for grp in "wr01 wr02 mt01 hv01" "wr03 wr04 ts01"; do
  set -- $grp
  if [ -n "${REALOS_ONLY:-}" ]; then # a subset, while developing
    set -- $(for v in "$@"; do case " $REALOS_ONLY " in *" $v "*) echo "$v" ;; esac; done)
  fi
  while [ $# -gt 0 ]; do
    g=("${@:1:$PARALLEL}")
    shift ${#g[@]}
    group "${g[@]}"
  done
  case " $grp " in
    *" mt01 "*)
      # mt01 powered off without logging out (poweroff -f, as a crash or a
      # reset would): the seal waits until streamsvc has dropped its dead
      # connection (no answer to NOP-In) and refuses until then.
      t0=$(date +%s)
      until df version seal golden >"$T/seal.out" 2>&1; do
        grep -q 'in use by a session' "$T/seal.out" || e2e_fail "version seal golden: $(cat "$T/seal.out")"
        [ $(( $(date +%s) - t0 )) -lt 90 ] || e2e_fail "version seal golden: $(cat "$T/seal.out") (90 s)"
        sleep 2
      done
      echo "version seal: $(( $(date +%s) - t0 )) s after mt01's poweroff"
      [ "$(export_count vdisk/golden@1)" = 1 ] ||
        e2e_fail "vdisk/golden@1 does not hold the maintenance boot's counter line"
      e2e_pass "maintenance device: the writes of its root became version 1 at version seal" ;;
  esac
done
e2e_pass "server and ram:4 (overflow): 2 warm resets each, every boot on a clean root (1 1 1)"
e2e_pass "server-persistent: 1 2 3 over 2 warm resets; device reset --discard: the next boot counts 1"
e2e_pass "private: 1 2 3 over 2 warm resets"
e2e_pass "hypervisor: 1 2 3 in the VM's overlay over 2 warm resets; device/hv01 untouched"
e2e_pass "test device on the sealed version sees the maintenance boot's file (2)"

[ "$(export_count vdisk/golden)" = none ] || e2e_fail "the OS's writes reached vdisk/golden"
realos_store_kept "$FARM" "$store0" || e2e_fail "a vDisk store file changed"
# Each reset left the old OS's connection open: streamsvc must not keep
# them.  The VMs are gone now, so none may stay past the dead-peer checks.
conns() { e2e_in_lan ss -Htn state established "( sport = :3260 )" | wc -l; }
for t in $(seq 120); do [ "$(conns)" -eq 0 ] && break; sleep 0.5; done
[ "$(conns)" -eq 0 ] || e2e_fail "streamsvc still holds $(conns) iSCSI connections of VMs gone for 60 s"
echo "streamsvc dropped the dead VMs' connections $((t / 2)) s after the last boot"
e2e_pass "warm reboots of a real OS: vDisk and store untouched, no connection left behind"
