# README: tests/e2e/lib/e2e.sh: shared e2e helpers, sourced by tests/e2e/*.sh:
#   e2e_init (temp dir $E2E_TMP under ${TMPDIR:-/tmp} + cleanup trap),
#   e2e_need TOOL..., e2e_free_port,
#   e2e_start_tgt PORT IQN LUN1-FILE (tgtd on 127.0.0.1:PORT, private control port),
#   e2e_qemu_boot LOG TIMEOUT MARKER -- QEMU-ARGS... (TCG, serial to LOG, user net,
#   waits for MARKER), e2e_make_test_disk OUT [MARKER] (the test MBR, see testmbr.sh),
#   e2e_lan NET NTAPS NBS (a PXE LAN in network namespaces: bridge, taps,
#   dnsmasq as site DHCP, bootstrap namespaces; deleted by the cleanup),
#   e2e_in_lan CMD... (CMD in the LAN namespace, foreground only),
#   e2e_wait_log LOG TEXT MESSAGE (a daemon's start line, else fail),
#   e2e_streamsvc_iscsi (streamsvc on $FARM, iSCSI on a free loopback port),
#   e2e_need_ipxe_iso, e2e_ipxe_iso ISO SCRIPT (a CD: isolinux chains iPXE).
# Exit codes: 0 pass, 1 fail, 77 skip.
# Debian's python3 carries the nbd module nbdsh needs; prefer it (as
# tests/interop/lib.sh does).
export PATH=/usr/bin:/bin:$PATH
E2E_LIB=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
E2E_PIDS=""
E2E_KILL9=""     # processes that ignore SIGTERM (tgtd)
E2E_NETNS=""     # network namespaces made by e2e_lan

e2e_skip() { echo "SKIP: $*"; exit 77; }
e2e_fail() { echo "FAIL: $*"; exit 1; }
e2e_pass() { echo "PASS: $*"; }

e2e_cleanup() {
  local p
  set +e # a process that already exited must not end the cleanup early
  for p in $E2E_PIDS; do kill "$p" 2>/dev/null; done
  for p in $E2E_KILL9; do kill -9 "$p" 2>/dev/null; done
  for p in $E2E_PIDS; do wait "$p" 2>/dev/null; done
  for p in $E2E_NETNS; do ip netns del "$p" 2>/dev/null; done
  [ -n "${E2E_TMP:-}" ] && [ -z "${E2E_KEEP:-}" ] && rm -rf "$E2E_TMP"
  return 0
}

e2e_init() {
  # under $TMPDIR when set (its path must be searchable by the diskfarm user)
  E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/df-e2e.XXXXXX")
  # Daemons started as root drop to the diskfarm user `diskfarm init`
  # gives the farm to: it must be able to search its way to the farm.
  chmod 711 "$E2E_TMP"
  trap e2e_cleanup EXIT
  # bash runs no EXIT trap when a signal kills it (a meson timeout, ^C):
  # turn those into an exit so that qemu and the daemons are stopped.
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
}

e2e_need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || e2e_skip "$t not installed"
  done
}

# A TCP port free on 127.0.0.1 now (small race accepted in tests).
e2e_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# e2e_start_tgt PORT IQN FILE: tgtd serving FILE as LUN 1 of IQN, open to
# every initiator.  Adds tgtd to E2E_PIDS.
e2e_start_tgt() {
  local port=$1 iqn=$2 file=$3 ctl
  e2e_need tgtd tgtadm
  ctl=$(( (port % 10000) + 10000 ))
  mkdir -p /var/run/tgtd 2>/dev/null
  tgtd -f -C "$ctl" --iscsi portal="127.0.0.1:$port" >"$E2E_TMP/tgtd.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
  E2E_KILL9="$E2E_KILL9 $!"
  local i
  for i in $(seq 50); do
    tgtadm -C "$ctl" --lld iscsi --op show --mode sys >/dev/null 2>&1 && break
    sleep 0.1
  done
  tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn" &&
  tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$file" &&
  tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL ||
    e2e_fail "tgtd setup failed: $(cat "$E2E_TMP/tgtd.log")"
}

# e2e_wait_log LOG TEXT MESSAGE: wait up to 10 s for TEXT in LOG (a
# daemon's start or health line); fail with "MESSAGE: <LOG>" without it.
e2e_wait_log() {
  local log=$1 text=$2
  for _ in $(seq 100); do grep -qs "$text" "$log" && return 0; sleep 0.1; done
  e2e_fail "$3: $(cat "$log")"
}

# e2e_streamsvc_iscsi: streamsvc on $FARM with NBD on the UNIX socket
# $E2E_TMP/nbd.sock, iSCSI on 127.0.0.1 at a port of its choosing and no
# admin listener; log $E2E_TMP/streamsvc.log, PID in E2E_PIDS.  Sets
# E2E_ISCSI_PORT once it listens.
e2e_streamsvc_iscsi() {
  local log=$E2E_TMP/streamsvc.log
  "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$E2E_TMP/nbd.sock" --admin-listen none \
    --iscsi-listen 127.0.0.1:0 >"$log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
  e2e_wait_log "$log" 'iscsi listening' "streamsvc did not start"
  E2E_ISCSI_PORT=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$log" | sed 's/.*://')
  [ -n "$E2E_ISCSI_PORT" ] || e2e_fail "streamsvc did not start: $(cat "$log")"
}

# Debian's isolinux and iPXE, what e2e_ipxe_iso puts on its CD.
E2E_ISOLINUX=/usr/lib/ISOLINUX/isolinux.bin
E2E_LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
E2E_IPXE=/usr/lib/ipxe/ipxe.lkrn

# e2e_need_ipxe_iso: skip unless e2e_ipxe_iso has what it needs.
e2e_need_ipxe_iso() {
  local f
  e2e_need xorriso
  for f in $E2E_ISOLINUX $E2E_LDLINUX $E2E_IPXE; do [ -f "$f" ] || e2e_skip "$f missing"; done
}

# e2e_ipxe_iso ISO SCRIPT: a BIOS-bootable CD at ISO whose isolinux loads
# iPXE, which runs the iPXE script SCRIPT (its text).  Built in
# $E2E_TMP/iso; fails with xorriso's messages.
e2e_ipxe_iso() {
  local iso=$1 dir=$E2E_TMP/iso
  mkdir -p "$dir"
  cp "$E2E_ISOLINUX" "$E2E_LDLINUX" "$E2E_IPXE" "$dir/"
  printf 'DEFAULT ipxe\nLABEL ipxe\n  KERNEL ipxe.lkrn\n  INITRD boot.ipxe\n' >"$dir/isolinux.cfg"
  printf '%s\n' "$2" >"$dir/boot.ipxe"
  xorriso -as mkisofs -quiet -o "$iso" -b isolinux.bin -c boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$dir" 2>"$E2E_TMP/xorriso.log" \
    || e2e_fail "xorriso: $(cat "$E2E_TMP/xorriso.log")"
}

e2e_make_test_disk() {
  "$E2E_LIB/testmbr.sh" "$@" || { rc=$?; [ $rc -eq 77 ] && e2e_skip "binutils missing"; e2e_fail "testmbr.sh failed"; }
}

# e2e_qemu_boot LOG TIMEOUT MARKER -- ARGS...: boot qemu (TCG, no display,
# serial to LOG, user networking with 10.0.2.2 = host loopback) and wait for
# MARKER in LOG.  Returns 0 when seen, 1 on timeout; qemu is killed either way.
e2e_qemu_boot() {
  local log=$1 timeout=$2 marker=$3; shift 4
  e2e_need qemu-system-x86_64
  : >"$log"
  qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none \
    -serial "file:$log" -no-reboot "$@" >"$log.qemu" 2>&1 &
  local qpid=$! t=0 rc=1
  while [ "$t" -lt $((timeout * 2)) ]; do
    if grep -q "$marker" "$log" 2>/dev/null; then rc=0; break; fi
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.5; t=$((t + 1))
  done
  kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null
  return $rc
}

# e2e_lan NET NTAPS NBS: a LAN for PXE boots in network namespaces made
# here (needs root, /dev/net/tun and ip; skips otherwise).  NET is the
# first three octets (10.77.0).  Sets:
#   E2E_LAN   namespace with bridge br0 at NET.1/24 (plus the addresses in
#             $E2E_LAN_ADDRS, e.g. "NET.2"), taps tap0..tap<NTAPS-1> on br0
#             for qemu (-netdev tap,ifname=tapN), and dnsmasq as the site
#             DHCP: addresses NET.100-150 only, no boot options (leases in
#             $E2E_TMP/leases, log in $E2E_TMP/dnsmasq.log, PID in E2E_PIDS)
#   E2E_BS1.. NBS namespaces, each linked to br0 by a veth: eth0 at NET.1<i>
#             (where bootstrapsvc runs: ProxyDHCP on its own address)
# The namespaces are deleted by the cleanup.  Daemons go in with
# `ip netns exec "$E2E_LAN" DAEMON ... &` directly: a backgrounded shell
# function is a subshell whose $! is not the daemon's PID.
e2e_lan() {
  local net=$1 ntaps=$2 nbs=$3 ns i a
  [ "$(id -u)" = 0 ] || e2e_skip "needs root (network namespaces, tap)"
  e2e_need ip dnsmasq
  [ -c /dev/net/tun ] || e2e_skip "no /dev/net/tun"
  ns=dfn$$
  E2E_LAN=${ns}lan
  ip netns add "$E2E_LAN" 2>/dev/null || e2e_skip "cannot create network namespaces"
  E2E_NETNS="$E2E_NETNS $E2E_LAN"
  e2e_in_lan ip link set lo up
  e2e_in_lan ip link add br0 type bridge
  e2e_in_lan ip addr add "$net.1/24" dev br0
  for a in ${E2E_LAN_ADDRS:-}; do e2e_in_lan ip addr add "$a/24" dev br0; done
  e2e_in_lan ip link set br0 up
  for i in $(seq 0 $((ntaps - 1))); do
    e2e_in_lan ip tuntap add "tap$i" mode tap
    e2e_in_lan ip link set "tap$i" master br0 up
  done
  for i in $(seq "$nbs"); do
    ip netns add "${ns}bs$i"
    E2E_NETNS="$E2E_NETNS ${ns}bs$i"
    eval "E2E_BS$i=${ns}bs$i"
    ip link add "vb$i" netns "$E2E_LAN" type veth peer name eth0 netns "${ns}bs$i"
    e2e_in_lan ip link set "vb$i" master br0 up
    ip netns exec "${ns}bs$i" ip link set lo up
    ip netns exec "${ns}bs$i" ip addr add "$net.1$i/24" dev eth0
    ip netns exec "${ns}bs$i" ip link set eth0 up
  done
  ip netns exec "$E2E_LAN" dnsmasq --no-daemon --port=0 --interface=br0 --bind-interfaces \
    --dhcp-range="$net.100,$net.150,255.255.255.0,10m" --no-resolv \
    --no-hosts --user=root --dhcp-leasefile="$E2E_TMP/leases" --log-dhcp \
    >"$E2E_TMP/dnsmasq.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
}

# e2e_in_lan CMD...: CMD in $E2E_LAN, in the foreground (see e2e_lan).
e2e_in_lan() { ip netns exec "$E2E_LAN" "$@"; }
