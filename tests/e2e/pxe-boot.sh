#!/bin/bash
# e2e (qemu TCG, network namespaces made here): PXE boot through
# ProxyDHCP -> TFTP -> HTTP script -> iSCSI to the test MBR's markers.
#
#   netns LAN:  bridge br0 10.77.0.1 (+ .2), dnsmasq (site DHCP: addresses
#               only, no boot options), streamsvc ss1 on .1 and ss2 on .2
#               (iSCSI + admin), tap0 -> qemu
#   netns BS1:  bootstrapsvc --address 10.77.0.11 (veth to br0)
#   netns BS2:  bootstrapsvc --address 10.77.0.12 (veth to br0)
#
# Boots, each to "DFMBR-DONE" on the serial console:
#   1. qemu's own NIC iPXE (-boot n, e1000): ProxyDHCP gives the script URL
#      with a one-time token; the fetch with it starts a new generation
#   2. chained: bootstrapsvc --chain-ipxe hands the ROM undionly.kpxe over
#      TFTP first; the chained iPXE then fetches the script
#   3. bootstrapsvc BS1 killed with SIGKILL: BS2 alone boots it
#   4. stream server ss1 down: the script lists ss2 only and it boots
# Skips (77) unless root with network namespaces, /dev/net/tun, qemu,
# dnsmasq and binutils.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
e2e_need ip dnsmasq qemu-system-x86_64 python3
[ -f /usr/lib/ipxe/undionly.kpxe ] || e2e_skip "ipxe package missing"
e2e_init
T=$E2E_TMP
FARM=$T/farm
df() { "$DISKFARM" --farm "$FARM" "$@"; }

# ---- network ---------------------------------------------------------------
E2E_LAN_ADDRS=10.77.0.2 e2e_lan 10.77.0 1 2
LAN=$E2E_LAN BS1=$E2E_BS1 BS2=$E2E_BS2
in_lan() { e2e_in_lan "$@"; }

# ---- farm ------------------------------------------------------------------
e2e_make_test_disk "$T/disk.img" DFLBA1-PXE 16
df init >/dev/null
df vdisk import golden "$T/disk.img" >/dev/null
df device add pc01 --mac 52:54:00:12:34:56 --vdisk golden --cache server >/dev/null
df bootstrap sync >/dev/null
df server add ss1 --address 10.77.0.1 --admin-port 8001 --iscsi-port 3260 >/dev/null
df server add ss2 --address 10.77.0.2 --admin-port 8001 --iscsi-port 3260 >/dev/null
# No chmod: init (as root) gave the farm to the diskfarm user, which both
# daemons drop to by default after binding.
[ -z "$(find "$FARM" -perm /o+w)" ] || e2e_fail "the farm has world-writable entries"

start_ss() { # NAME IP
  ip netns exec "$LAN" "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/$1.sock" \
    --iscsi-listen "$2:3260" --admin-listen "$2:8001" >"$T/$1.log" 2>&1 &
  eval "PID_$1=$!"
  E2E_PIDS="$E2E_PIDS $!"
  for _ in $(seq 100); do grep -q 'iscsi listening' "$T/$1.log" && return; sleep 0.1; done
  e2e_fail "streamsvc $1 did not start: $(cat "$T/$1.log")"
}
start_ss ss1 10.77.0.1
start_ss ss2 10.77.0.2

start_bs() { # N [options]
  local n=$1; shift
  local ns; ns=$( [ "$n" = 1 ] && echo "$BS1" || echo "$BS2")
  : >"$T/bs$n.log"
  ip netns exec "$ns" "$BOOTSTRAPSVC" --farm "$FARM" --address "10.77.0.1$n" \
    --interface eth0 --health-interval 500 -v "$@" >>"$T/bs$n.log" 2>&1 &
  eval "PID_BS$n=$!"
  E2E_PIDS="$E2E_PIDS $!"
  for _ in $(seq 100); do
    grep -q 'is now healthy' "$T/bs$n.log" && return
    sleep 0.1
  done
  e2e_fail "bootstrapsvc $n not healthy: $(cat "$T/bs$n.log")"
}
stop_bs() { local p; eval "p=\$PID_BS$1"; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }

boot() { # NAME: boot the VM once (TCG, -boot n), wait for the MBR's last marker
  local log=$T/serial-$1.log t=0 ok=1
  : >"$log"
  ip netns exec "$LAN" qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none \
    -serial "file:$log" -no-reboot -boot n \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device e1000,netdev=n0,mac=52:54:00:12:34:56 >"$log.qemu" 2>&1 &
  local qpid=$!
  while [ "$t" -lt 480 ]; do                # 240 s
    if grep -q DFMBR-DONE "$log" 2>/dev/null; then ok=0; break; fi
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.5; t=$((t + 1))
  done
  kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true
  if [ "$ok" -ne 0 ]; then
    echo "--- serial"; cat "$log" "$log.qemu" || true
    for f in bs1 bs2 ss1 ss2 dnsmasq; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
    e2e_fail "boot $1: no DFMBR-DONE on serial"
  fi
  grep -q 'DFMBR-LBA1 DFLBA1-PXE' "$log" || e2e_fail "boot $1: int13 read wrong"
  grep -q 'DFMBR-LBA2 DFMBR-WRITTEN' "$log" || e2e_fail "boot $1: int13 write not read back"
  echo "boot $1: DFMBR-DONE after $((t / 2)) s"
}
fetched() { cat "$T"/bs*.log | grep -c 'boot.ipxe for pc01' || true; }

# ---- 1. NIC ROM iPXE -> ProxyDHCP -> HTTP script -> iSCSI --------------------
start_bs 1
start_bs 2
n0=$(fetched)
boot rom
[ "$(fetched)" -gt "$n0" ] || e2e_fail "boot.ipxe was not fetched"
grep -q 'proxydhcp: 52:54:00:12:34:56 .*iPXE.* -> http://.*&token=(one-time token)' "$T/bs1.log" "$T/bs2.log" ||
  e2e_fail "no ProxyDHCP answer with the script URL and its token"
# iPXE fetched the script with the token of the ProxyDHCP answer (either
# server may have answered DHCP and either may serve the script).
cat "$T"/bs*.log | grep -q 'boot.ipxe for pc01 .* new generation' ||
  e2e_fail "the script was not fetched with a valid one-time token"
e2e_pass "NIC ROM iPXE: ProxyDHCP (one-time token) -> HTTP boot.ipxe -> iSCSI sanboot -> MBR markers"

# ---- 2. chained through undionly.kpxe -----------------------------------------
stop_bs 1; stop_bs 2
start_bs 1 --chain-ipxe
start_bs 2 --chain-ipxe
boot chain
grep -q 'sent undionly.kpxe' "$T/bs1.log" "$T/bs2.log" || e2e_fail "undionly.kpxe not sent over TFTP"
grep -q 'boot.ipxe for pc01 .* new generation' "$T/bs1.log" "$T/bs2.log" ||
  e2e_fail "chained iPXE did not fetch the script with a valid token"
e2e_pass "chained: ProxyDHCP -> TFTP undionly.kpxe -> iPXE -> HTTP boot.ipxe -> iSCSI"

# ---- 3. one bootstrap server killed -------------------------------------------
stop_bs 1; stop_bs 2
start_bs 1
start_bs 2
kill -9 "$PID_BS1"
n0=$(grep -c 'boot.ipxe for pc01' "$T/bs2.log" || true)
boot bs1-killed
[ "$(grep -c 'boot.ipxe for pc01' "$T/bs2.log")" -gt "$n0" ] || e2e_fail "BS2 did not serve the script"
e2e_pass "bootstrapsvc BS1 killed -9: BS2 alone boots the VM"

# ---- 4. one stream server down ---------------------------------------------------
kill "$PID_ss1"; wait "$PID_ss1" 2>/dev/null || true
for _ in $(seq 50); do grep -q 'ss1 is now unhealthy' "$T/bs2.log" && break; sleep 0.1; done
grep -q 'ss1 is now unhealthy' "$T/bs2.log" || e2e_fail "BS2 did not see ss1 down"
boot ss1-down
grep 'boot.ipxe for pc01' "$T/bs2.log" | tail -1 | grep -q '1 stream server, first ss2' ||
  e2e_fail "script did not list ss2 alone"
grep -q 'iSCSI login' "$T/ss2.log" || e2e_fail "no iSCSI login on ss2"
e2e_pass "stream server ss1 down: the script lists ss2 and the VM boots from it"
