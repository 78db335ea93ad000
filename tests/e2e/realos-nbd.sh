#!/bin/bash
# e2e (qemu TCG, user networking): a real OS runs from the stream with its
# root on NBD through nbd-client.  The VM starts Debian's kernel and an
# initramfs directly (-kernel/-initrd: the hypervisor's part of the boot)
# with `root=/dev/nbd0p2 nbdroot=10.0.2.2:PORT/device/<name> ip=dhcp`;
# 10.0.2.2 is the host's loopback, where streamsvc serves NBD.  The root
# file system's /sbin/init runs the workload (tests/e2e/lib/make-golden-linux.sh).
#   nb01: cache `server`, small initramfs: boot 1 counts 1, boot 2 counts 2
#         (same boot generation: the cache lives on), `device reset`, boot 3
#         counts 1
#   nb02: cache `server-persistent`, small initramfs: 1, then 2
#   nb03: cache `server`, Debian's own initramfs (nbd-client's hook): 1
# Boots run two at a time.
# After boot 1 the counters are in the devices' caches only: read through
# device/<name>, absent from vdisk/golden, store files' sha256 unchanged.
# Every boot: no kernel I/O or NBD error in the OS log.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
e2e_need qemu-system-x86_64 nbdcopy debugfs e2fsck sfdisk bc python3
BOOT_TIMEOUT=${REALOS_BOOT_TIMEOUT:-400}
FLAVOURS="small debian"
command -v mkinitramfs >/dev/null 2>&1 || [ -x /usr/sbin/mkinitramfs ] || FLAVOURS=small
realos_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

realos_images "$T/img" $FLAVOURS
df init >/dev/null
df vdisk import golden "$T/img/golden-small.img" >/dev/null
rm -f "$T/img/golden-"*.img
df device add nb01 --mac 52:54:00:78:00:01 --vdisk golden --cache server >/dev/null
df device add nb02 --mac 52:54:00:78:00:02 --vdisk golden --cache server-persistent >/dev/null
df device add nb03 --mac 52:54:00:78:00:03 --vdisk golden --cache server >/dev/null
store0=$(realos_store_sum "$FARM")

# port 0: the kernel picks a free port (no race with tests running at once)
"$STREAMSVC" --farm "$FARM" --nbd-listen 127.0.0.1:0 --admin-listen none \
  >"$T/streamsvc.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
for _ in $(seq 100); do grep -q 'nbd listening on 127.0.0.1:' "$T/streamsvc.log" && break; sleep 0.1; done
PORT=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
[ -n "$PORT" ] || e2e_fail "streamsvc did not start: $(cat "$T/streamsvc.log")"

vm_start() { # NAME MAC FLAVOUR ROUND
  realos_qemu_start "$1" "$T/serial-$1-$4.log" \
    -kernel "$T/img/vmlinuz" -initrd "$T/img/initrd-$3" \
    -append "console=ttyS0 panic=-1 no_timer_check rw quiet root=/dev/nbd0p2 nbdroot=10.0.2.2:$PORT/device/$1 ip=dhcp" \
    -nic "user,model=e1000,mac=$2"
}
vm_wait() { # NAME ROUND
  realos_qemu_wait "$1" "$T/serial-$1-$2.log" "$BOOT_TIMEOUT" || {
    realos_dump "$T/serial-$1-$2.log"
    tail -15 "$T/streamsvc.log"
    e2e_fail "$1 boot $2: no workload end marker"
  }
}
export_count() { realos_cached_count "nbd://127.0.0.1:$PORT/$1"; }

# ---- boot 1 -------------------------------------------------------------------
vm_start nb01 52:54:00:78:00:01 small 1
vm_start nb02 52:54:00:78:00:02 small 1
vm_wait nb01 1
vm_wait nb02 1
realos_check_boot "$T/serial-nb01-1.log" 1
realos_check_boot "$T/serial-nb02-1.log" 1
grep -q 'session open: export device/nb01' "$T/streamsvc.log" || e2e_fail "no NBD session for nb01"
[ "$(export_count device/nb01)" = 1 ] || e2e_fail "nb01's cache does not hold its boot counter"
[ "$(export_count device/nb02)" = 1 ] || e2e_fail "nb02's cache does not hold its boot counter"
[ "$(export_count vdisk/golden)" = none ] || e2e_fail "the OS's writes reached vdisk/golden"
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
e2e_pass "small initramfs: root on NBD (server and server-persistent); writes in the caches only"

# ---- boot 2: same boot generation; Debian's initramfs --------------------------
vm_start nb01 52:54:00:78:00:01 small 2
case $FLAVOURS in *debian*) vm_start nb03 52:54:00:78:00:03 debian 1 ;; esac
vm_wait nb01 2
realos_check_boot "$T/serial-nb01-2.log" 2
e2e_pass "boot 2: the server cache lives on within the boot generation (2)"
case $FLAVOURS in
  *debian*)
    vm_wait nb03 1
    realos_check_boot "$T/serial-nb03-1.log" 1
    e2e_pass "Debian's initramfs (nbd-client's hook): root on NBD" ;;
  *) echo "SKIP: Debian's initramfs (initramfs-tools missing)" ;;
esac

# ---- device reset -> boot 3 ------------------------------------------------------
df device reset nb01 >/dev/null
vm_start nb01 52:54:00:78:00:01 small 3
vm_start nb02 52:54:00:78:00:02 small 2
vm_wait nb01 3
vm_wait nb02 2
realos_check_boot "$T/serial-nb01-3.log" 1
realos_check_boot "$T/serial-nb02-2.log" 2
[ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
e2e_pass "device reset: the next boot counts 1 again; server-persistent counts 2; store untouched"
