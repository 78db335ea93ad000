#!/bin/bash
# e2e (issue 12 acceptance): a farm of three servers on one PostgreSQL,
# over a namespace LAN, nothing shared but the DB.
#
#   netns LAN: bridge br0 10.79.0.1, dnsmasq (site DHCP), tap0 -> qemu
#   netns BS1: PostgreSQL on 10.79.0.11:5432
#   netns BS2..BS4: servers s1..s3 at 10.79.0.12..14, each a streamsvc
#              (iSCSI, NBD, admin on its address) with its own farm
#              directory and store; bootstrapsvc on s1 (ProxyDHCP, HTTP)
#
# - import the test disk on s1; `store sync` on s2 and s3 (throughput);
#   corrupt s3's copy: `store status` says corrupt, s3 refuses it
# - a real qemu PXE boot (NIC ROM iPXE -> ProxyDHCP -> boot.ipxe -> iSCSI
#   sanboot -> MBR markers); more targets ask boot.ipxe and hold an NBD
#   session on the first server their script names: placement by load
#   across s1/s2 (never the corrupt s3)
# - PostgreSQL stopped: a known device boots again in qemu and streams
#   from the local snapshot, `diskfarm device add` fails naming the DB;
#   started again: servers healthy, watch listening, device add works
# - kill -9 s2: unhealthy within the heartbeat timeout, new boot scripts
#   name s1 only
# Figures: sync throughput, placement, heartbeat-to-unhealthy time.
# Root only (network namespaces, tap); 77 otherwise.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/../lib/pg.sh"
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"
e2e_need ip dnsmasq qemu-system-x86_64 python3 curl nbdinfo nbdsh psql
[ -f /usr/lib/ipxe/undionly.kpxe ] || e2e_skip "ipxe package missing"
pg_bindir >/dev/null || e2e_skip "PostgreSQL is not installed"
e2e_init
T=$E2E_TMP
NET=10.79.0
HB=1000 # heartbeat interval (ms); unhealthy after 3 intervals
# Debian's python3 carries the nbd module nbdsh needs
export PATH=/usr/bin:/bin:$PATH
e2e_lan $NET 1 4
PGNS=$E2E_BS1
NS1=$E2E_BS2 NS2=$E2E_BS3 NS3=$E2E_BS4
ip_of() { echo "$NET.1$(( $1 + 1 ))"; } # server N -> its address
ns_of() { eval "echo \$NS$1"; }

# ---- PostgreSQL in its own namespace -----------------------------------
PGD=$T/pg
pg_up() { pg_lan_up "$PGNS" "$PGD" || e2e_fail "PostgreSQL did not start"; }
pg_down() { pg_lan_down "$PGD"; }
# the cleanup: PostgreSQL by its data directory, then e2e_cleanup
trap 'pg_lan_down "$PGD" immediate 2>/dev/null || true; e2e_cleanup' EXIT
pg_lan_start "$PGNS" "$NET.11" 80 "$PGD" || e2e_fail "PostgreSQL in $PGNS"
DB=$PG_LAN_DB

# dfs N ARGS: the console on server N (its namespace, its farm directory)
dfs() { local n=$1; shift; ip netns exec "$(ns_of "$n")" "$DISKFARM" --farm "$T/f$n" --db "$DB" "$@"; }
for n in 1 2 3; do dfs $n init >/dev/null || e2e_fail "init on s$n"; done

e2e_make_test_disk "$T/disk.img" DFLBA1-FARM 64
# 32 MiB of random data past the MBR's sectors: something to sync
head -c $((32 << 20)) /dev/urandom | dd of="$T/disk.img" bs=1M seek=8 conv=notrunc status=none
dfs 1 vdisk import golden "$T/disk.img" >/dev/null
dfs 1 bootstrap sync >/dev/null
for i in 1 2 3 4 5 6; do
  dfs $(( (i % 3) + 1 )) device add "pc0$i" --mac "52:54:00:79:00:0$i" --vdisk golden >/dev/null
done

# ---- servers --------------------------------------------------------------
start_ss() { # N
  local n=$1 a; a=$(ip_of "$1")
  ip netns exec "$(ns_of "$n")" "$STREAMSVC" --farm "$T/f$n" --db "$DB" \
    --nbd-listen "$a:10809" --iscsi-listen "$a:3260" --admin-listen "$a:8001" \
    --server-name "s$n" --server-address "$a" --heartbeat-interval $HB \
    >>"$T/s$n.log" 2>&1 &
  eval "PID_s$n=$!"
  E2E_PIDS="$E2E_PIDS $!"
  for _ in $(seq 100); do
    grep -q "registry: registered as streamsvc s$n" "$T/s$n.log" && return
    sleep 0.1
  done
  cat "$T/s$n.log"; e2e_fail "s$n did not register"
}
for n in 1 2 3; do start_ss $n; done
for _ in $(seq 100); do
  grep -q "present version files verified" "$T/s1.log" && break; sleep 0.1
done

sync_to() { # N
  local t0 t1 bytes
  t0=$(date +%s%N)
  dfs "$1" --json store sync --server "s$1" --from s1 >"$T/sync$1.json" ||
    { cat "$T/sync$1.json"; e2e_fail "store sync on s$1"; }
  t1=$(date +%s%N)
  bytes=$(python3 -c 'import json,sys; print(sum(i["bytes"] for i in json.load(open(sys.argv[1]))))' "$T/sync$1.json")
  echo "figure: store sync s1 -> s$1: $bytes bytes in $(( (t1 - t0) / 1000000 )) ms ($(python3 -c "print('%.1f' % ($bytes / 1048576 / max(($t1 - $t0) / 1e9, 1e-3)))") MiB/s, console wall time, over the namespace LAN)"
}
sync_to 2
sync_to 3
e2e_pass "store sync on s2 and s3 from s1 (each its own store)"

# corrupt s3's copy and verify it there
f3=$T/f3/store/golden/golden.0.qcow2
printf 'XXXXXXXX' | dd of="$f3" bs=1 seek=65536 conv=notrunc status=none
dfs 3 vdisk verify golden --server s3 >/dev/null 2>&1 || true
dfs 1 --json store status >"$T/status.json"
python3 - "$T/status.json" <<'PY' || e2e_fail "store status"
import json, sys
d = json.load(open(sys.argv[1]))
st = {s: d[0]["servers"][s]["state"] for s in ("s1", "s2", "s3")}
assert st == {"s1": "verified", "s2": "verified", "s3": "corrupt"}, st
PY
if ip netns exec "$NS3" nbdinfo "nbd://$(ip_of 3)/vdisk/golden" >/dev/null 2>&1; then
  e2e_fail "s3 served its corrupt copy"
fi
e2e_pass "s3's corrupt copy: store status says corrupt, s3 refuses it"

# ---- bootstrapsvc on s1, boots ------------------------------------------
: >"$T/bs.log"
ip netns exec "$NS1" "$BOOTSTRAPSVC" --farm "$T/f1" --db "$DB" --address "$(ip_of 1)" \
  --interface eth0 --health-interval 300 -v >>"$T/bs.log" 2>&1 &
PID_BS=$!
E2E_PIDS="$E2E_PIDS $!"
for _ in $(seq 100); do
  [ "$(grep -c 'is now healthy' "$T/bs.log")" -ge 2 ] && break; sleep 0.1
done
URL="http://$(ip_of 1)"

# first NAME MAC: the server the boot script of MAC names first
first() {
  ip netns exec "$NS1" curl -sS "$URL/boot.ipxe?mac=$1" -o "$T/script.$1" || return 1
  grep -o "iscsi:$NET\.1[0-9]*" "$T/script.$1" | head -1 | sed "s/.*\.1\([0-9]\)\$/\1/" |
    while read -r d; do echo "s$(( d - 1 ))"; done
}

boot() { # LABEL MAC
  local log=$T/serial-$1.log t=0 ok=1
  : >"$log"
  ip netns exec "$E2E_LAN" qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none \
    -serial "file:$log" -no-reboot -boot n \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device "e1000,netdev=n0,mac=$2" >"$log.qemu" 2>&1 &
  local qpid=$!
  while [ "$t" -lt 480 ]; do
    if grep -q DFMBR-DONE "$log" 2>/dev/null; then ok=0; break; fi
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.5; t=$((t + 1))
  done
  kill "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true
  if [ "$ok" -ne 0 ]; then
    cat "$log" "$log.qemu" || true
    for f in bs s1 s2 s3; do echo "--- $f"; tail -15 "$T/$f.log" || true; done
    e2e_fail "boot $1: no DFMBR-DONE on serial"
  fi
  grep -q 'DFMBR-LBA1 DFLBA1-FARM' "$log" || e2e_fail "boot $1: int13 read wrong"
  echo "boot $1: DFMBR-DONE after $((t / 2)) s"
}
# where a boot went: the server whose log has the iSCSI login of device
# pc0N (by name or by MAC)
landed() { grep -lE "iSCSI login: .* -> .*(:$1|79-00-0${1#pc0})\b" "$T"/s?.log | tail -1 | sed 's|.*/\(s[0-9]\).log|\1|'; }

boot pxe 52:54:00:79:00:01
L1=$(landed pc01)
[ -n "$L1" ] && [ "$L1" != s3 ] || e2e_fail "pc01 landed on '$L1'"
e2e_pass "qemu PXE boot of pc01 through bootstrapsvc, streamed by $L1"

# more targets: ask the boot script, hold a session where it says
hold() { # DEVICE SERVER: an NBD session on SERVER held 120 s
  local n=${2#s}
  ip netns exec "$(ns_of "$n")" nbdsh -u "nbd://$(ip_of "$n")/device/$1" \
    -c 'h.pread(4096, 0); import time; time.sleep(120)' >"$T/hold-$1.log" 2>&1 &
  E2E_PIDS="$E2E_PIDS $!"
}
hold pc01 "$L1"
placement="pc01:$L1"
for i in 2 3 4 5; do
  sleep 1 # a heartbeat and a health round: the load is seen
  s=$(first "52:54:00:79:00:0$i") || e2e_fail "boot.ipxe pc0$i"
  [ -n "$s" ] && [ "$s" != s3 ] || { cat "$T/script.52:54:00:79:00:0$i"; e2e_fail "pc0$i sent to '$s'"; }
  hold "pc0$i" "$s"
  placement="$placement pc0$i:$s"
done
n1=$(echo "$placement" | tr ' ' '\n' | grep -c ':s1$' || true)
n2=$(echo "$placement" | tr ' ' '\n' | grep -c ':s2$' || true)
echo "figure: placement $placement (s1 $n1, s2 $n2, s3 0: corrupt copy)"
[ "$n1" -ge 2 ] && [ "$n2" -ge 2 ] || e2e_fail "boots not spread by load: $placement"
e2e_pass "targets land on different servers by load, never on s3"

# ---- PostgreSQL down ----------------------------------------------------
pg_down
sleep 2
msg=$(dfs 2 device add pc09 --mac 52:54:00:79:00:09 --vdisk golden 2>&1) &&
  e2e_fail "device add with the DB down"
case $msg in *"farm DB host=$NET.11"*"dbname=farm"*) ;; *) e2e_fail "device add: '$msg'" ;; esac
echo "device add with PostgreSQL down: $msg"
s=$(first 52:54:00:79:00:06) || e2e_fail "boot.ipxe offline"
[ -n "$s" ] || { cat "$T/script.52:54:00:79:00:06"; e2e_fail "no server in the offline boot script"; }
ip netns exec "$(ns_of "${s#s}")" nbdsh -u "nbd://$(ip_of "${s#s}")/device/pc06" \
  -c 'assert h.pread(512, 512)[:11] == b"DFLBA1-FARM"' || e2e_fail "pc06 does not stream offline"
# pc01 reboots: offline it still gets a new boot generation (a clean
# cache), journaled by bootstrapsvc and told to the servers its script
# names, wherever its previous generation's local cache was.
boot offline 52:54:00:79:00:01
grep -q "boot scripts from the local snapshot" "$T/bs.log" || e2e_fail "bootstrapsvc was not offline"
OFFGEN=$(sed -n 's/.*pc01: offline: new boot generation \([0-9]*\) journaled.*/\1/p' "$T/bs.log" | tail -1)
[ -n "$OFFGEN" ] || { tail -20 "$T/bs.log"; e2e_fail "pc01's offline boot got no new generation"; }
echo "pc01 rebooted offline at generation $OFFGEN: $(grep "pc01: offline: new boot generation" "$T/bs.log" | tail -1 | sed 's/.*taken by/taken by/')"
for n in 1 2 3; do kill -0 "$(eval echo \$PID_s$n)" || e2e_fail "s$n died with the DB down"; done
e2e_pass "PostgreSQL down: known devices boot (qemu) and stream from the local snapshot; device add names the DB"

# ---- PostgreSQL back ----------------------------------------------------
pg_up
t0=$(date +%s%N)
for _ in $(seq 100); do
  dfs 1 --json server list --no-health >"$T/sl.json" 2>/dev/null &&
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if all(s["state"] == "healthy" for s in d if s["kind"] == "streamsvc") else 1)' "$T/sl.json" &&
    break
  sleep 0.2
done
echo "figure: every server healthy $(( ($(date +%s%N) - t0) / 1000000 )) ms after PostgreSQL came back"
for n in 1 2 3; do # the watch reconnects every second, on its own connection
  for _ in $(seq 100); do
    [ "$(grep -c 'farm watch: listening for changes' "$T/s$n.log")" -ge 2 ] && break
    sleep 0.1
  done
  [ "$(grep -c 'farm watch: listening for changes' "$T/s$n.log")" -ge 2 ] ||
    { tail -20 "$T/s$n.log"; e2e_fail "s$n's change watch did not listen again within 10 s"; }
done
dfs 2 device add pc09 --mac 52:54:00:79:00:09 --vdisk golden >/dev/null || e2e_fail "device add after the outage"
dfs 3 device show pc09 >/dev/null || e2e_fail "s3 does not see pc09"
for _ in $(seq 50); do
  gen=$(dfs 1 --json device show pc01 | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])')
  [ "$gen" -ge "$OFFGEN" ] && break
  sleep 0.2
done
[ "$gen" = "$OFFGEN" ] || e2e_fail "pc01 is at generation $gen after the outage, not its offline $OFFGEN"
echo "pc01's offline boot generation $OFFGEN is recorded in the farm DB"
e2e_pass "PostgreSQL back: heartbeats, watches and console writes converge"

# ---- kill -9 s2 ---------------------------------------------------------
kill -9 "$PID_s2"
t0=$(date +%s%N)
for _ in $(seq 200); do
  dfs 1 --json server list --no-health >"$T/sl.json"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if [s["state"] for s in d if s["name"] == "s2"] == ["unhealthy"] else 1)' "$T/sl.json" && break
  sleep 0.05
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q '"unhealthy"' "$T/sl.json" || e2e_fail "s2 not unhealthy"
echo "figure: heartbeat-to-unhealthy: s2 unhealthy ${ms} ms after kill -9 (timeout $((3 * HB)) ms)"
[ "$ms" -le $((3 * HB + 1500)) ] || e2e_fail "s2 took $ms ms to go unhealthy"
sleep 1
s=$(first 52:54:00:79:00:06)
[ "$s" = s1 ] || { cat "$T/script.52:54:00:79:00:06"; e2e_fail "after s2 died pc06 is sent to '$s'"; }
grep -q "iscsi:$(ip_of 2)" "$T/script.52:54:00:79:00:06" && e2e_fail "the script still names s2"
e2e_pass "kill -9 s2: unhealthy within the heartbeat timeout, new boots go to s1"
