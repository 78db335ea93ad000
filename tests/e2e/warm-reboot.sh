#!/bin/bash
# e2e (qemu TCG, network namespaces made here): warm reboots.  A device
# PXE-boots through bootstrapsvc's boot.ipxe script and sanboots the test MBR
# over iSCSI from streamsvc; then the monitor's `system_reset` reboots it the
# way a real machine resets: the old iSCSI session's TCP connection is never
# closed.  Each reset fetches boot.ipxe again (a new boot generation) and the
# device must boot to DFMBR-DONE again, twice in a row:
#   vm01, cache server:            every boot sees a fresh cache (DFMBR-BOOT
#                                  01 three times: boot 1's writes are gone)
#   vm02, cache server-persistent: the cache survives (DFMBR-BOOT 01, 02, 03:
#                                  boot 3 sees what boots 1 and 2 wrote)
# and at the end streamsvc holds no connection of the boots before the last.
# Both VMs run at once (one qemu each, two taps on the bridge).
#
#   netns LAN: bridge br0 10.78.0.1, dnsmasq (site DHCP), streamsvc (iSCSI +
#              admin on .1), tap0 + tap1 -> qemu
#   netns BS:  bootstrapsvc --address 10.78.0.11 (veth to br0)
# Skips (77) unless root with network namespaces, /dev/net/tun, qemu,
# dnsmasq and binutils.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
e2e_need ip dnsmasq qemu-system-x86_64 python3
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }
BOOT_TIMEOUT=100              # seconds per boot (PXE under TCG: ~25 s)

# ---- network ---------------------------------------------------------------
e2e_lan 10.78.0 2 1
LAN=$E2E_LAN BS=$E2E_BS1
in_lan() { e2e_in_lan "$@"; }

# ---- farm ------------------------------------------------------------------
e2e_make_test_disk "$T/disk.img" DFLBA1-WARM 16
df init >/dev/null
df vdisk import golden "$T/disk.img" >/dev/null
df device add vm01 --mac 52:54:00:77:00:01 --vdisk golden --cache server >/dev/null
df device add vm02 --mac 52:54:00:77:00:02 --vdisk golden \
  --cache server-persistent >/dev/null
df bootstrap sync >/dev/null
df server add ss1 --address 10.78.0.1 --admin-port 8001 --iscsi-port 3260 >/dev/null
# No chmod: init (as root) gave the farm to the diskfarm user, which both
# daemons drop to by default after binding.
[ -z "$(find "$FARM" -perm /o+w)" ] || e2e_fail "the farm has world-writable entries"

ip netns exec "$LAN" "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/ss1.sock" \
  --iscsi-listen 10.78.0.1:3260 --admin-listen 10.78.0.1:8001 >"$T/ss1.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
e2e_wait_log "$T/ss1.log" 'iscsi listening' "streamsvc did not start"

ip netns exec "$BS" "$BOOTSTRAPSVC" --farm "$FARM" --address 10.78.0.11 \
  --interface eth0 --health-interval 500 >"$T/bs.log" 2>&1 &
E2E_PIDS="$E2E_PIDS $!"
e2e_wait_log "$T/bs.log" 'is now healthy' "bootstrapsvc not healthy"

# ---- VMs ---------------------------------------------------------------------
start_vm() { # NAME TAP MAC: power on (TCG, -boot n); HMP monitor on a socket
  : >"$T/serial-$1.log"
  ip netns exec "$LAN" qemu-system-x86_64 -accel tcg -m 256 -display none -no-shutdown \
    -monitor "unix:$T/mon-$1.sock,server=on,wait=off" \
    -serial "file:$T/serial-$1.log" -boot n \
    -netdev "tap,id=n0,ifname=$2,script=no,downscript=no" \
    -device "e1000,netdev=n0,mac=$3" >"$T/qemu-$1.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
  eval "QPID_$1=$!"
}

hmp() { # NAME COMMAND: one HMP command on the VM's monitor
  python3 - "$T/mon-$1.sock" "$2" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.recv(4096)                      # banner + prompt
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.3)
s.close()
EOF
}

done_count() { grep -c DFMBR-DONE "$T/serial-$1.log" 2>/dev/null || true; }

diagnose() { # NAME
  echo "--- serial $1"; cat "$T/serial-$1.log" "$T/qemu-$1.log" || true
  for f in bs ss1; do echo "--- $f"; tail -20 "$T/$f.log" || true; done
}

# wait_boot NAME N: wait for the N-th DFMBR-DONE of NAME; fail fast when
# streamsvc refuses the device's login.
wait_boot() {
  local name=$1 n=$2 t=0 qpid
  eval "qpid=\$QPID_$name"
  while [ "$t" -lt $((BOOT_TIMEOUT * 2)) ]; do
    [ "$(done_count "$name")" -ge "$n" ] && { echo "$name boot $n: DFMBR-DONE after $((t / 2)) s"; return 0; }
    kill -0 "$qpid" 2>/dev/null || { diagnose "$name"; e2e_fail "$name: qemu died"; }
    if grep -q "refused.*device $name:" "$T/ss1.log"; then
      diagnose "$name"
      e2e_fail "$name boot $n: streamsvc refused the login: $(grep "refused.*device $name:" "$T/ss1.log" | head -1)"
    fi
    sleep 0.5; t=$((t + 1))
  done
  diagnose "$name"
  e2e_fail "$name boot $n: no DFMBR-DONE on serial within $BOOT_TIMEOUT s"
}

fetches() { grep -c "boot.ipxe for $1 " "$T/bs.log" || true; }

start_vm vm01 tap0 52:54:00:77:00:01
start_vm vm02 tap1 52:54:00:77:00:02
for n in 1 2 3; do
  for vm in vm01 vm02; do wait_boot "$vm" "$n"; done
  for vm in vm01 vm02; do
    [ "$(fetches "$vm")" -ge "$n" ] || e2e_fail "$vm boot $n: boot.ipxe not fetched ($(fetches "$vm") times)"
    grep -q 'DFMBR-LBA1 DFLBA1-WARM' "$T/serial-$vm.log" || e2e_fail "$vm: int13 read wrong"
    [ "$(grep -c 'DFMBR-LBA2 DFMBR-WRITTEN' "$T/serial-$vm.log")" -ge "$n" ] ||
      e2e_fail "$vm boot $n: int13 write not read back"
    [ "$n" -lt 3 ] && hmp "$vm" system_reset
  done
done

# Each reset left the old session's connection open (no FIN from the VM):
# streamsvc must not keep them (fenced, or dropped as dead peers: NOP-In,
# TCP keepalive).  At most the current session of each VM stays.
vm_ip() { awk -v m="$1" '$2 == m { print $3 }' "$T/leases"; }
conns() { in_lan ss -Htn state established "( sport = :3260 )" | grep -c " $1:" || true; }
for vm in "vm01 52:54:00:77:00:01" "vm02 52:54:00:77:00:02"; do
  set -- $vm
  ip=$(vm_ip "$2")
  [ -n "$ip" ] || e2e_fail "$1: no DHCP lease"
  for t in $(seq 60); do [ "$(conns "$ip")" -le 1 ] && break; sleep 0.5; done
  [ "$(conns "$ip")" -le 1 ] ||
    e2e_fail "$1: streamsvc still holds $(conns "$ip") connections from $ip 30 s after boot 3"
  echo "$1: old sessions gone $((t / 2)) s after boot 3"
done
boots() { grep -o 'DFMBR-BOOT [0-9A-F]*' "$T/serial-$1.log" | awk '{print $2}' | tr '\n' ' '; }
[ "$(boots vm01)" = "01 01 01 " ] ||
  e2e_fail "vm01 (server): boot counters '$(boots vm01)', want '01 01 01' (cache reset at each boot)"
e2e_pass "cache server: 2 warm resets, 3 boots, each on a fresh cache"
[ "$(boots vm02)" = "01 02 03 " ] ||
  e2e_fail "vm02 (server-persistent): boot counters '$(boots vm02)', want '01 02 03' (boot 1's write seen in boot 3)"
e2e_pass "cache server-persistent: 2 warm resets, 3 boots, boot 3 sees the writes of boots 1 and 2"
