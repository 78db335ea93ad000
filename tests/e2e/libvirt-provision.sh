#!/bin/bash
# e2e (libvirt, qemu driver, TCG): a real libvirtd + virtlogd started here,
# `diskfarm vm provision` makes web01-03 from a template domain with the BDM
# ISO and part01 with the BDM boot partition; all four boot at once from
# the streamed vDisk (first bootstrap server closed: failover to the direct
# iSCSI sanboot), each writing LBA 2 into its own cache, and libvirt runs
# the installed hook (dist/libvirt/hooks/qemu.d/diskfarm): `prepare` starts
# a boot generation before the VM logs in, `release` drops the cache after
# `virsh destroy`.  Also `vm attach-media` on the template and `vm list`.
#
# The daemons: a private *system-mode* libvirtd (qemu:///system over its own
# socket; root, so the hook directory is the compiled-in
# /etc/libvirt/hooks) and its virtlogd, both in their own mount + PID
# namespace (unshare): /etc/libvirt is a directory of this test, /run is a
# tmpfs with /run/libvirt bound to this test's directory, /var is an
# overlay whose writes land here, /etc/passwd + /etc/group are copies with
# the libvirt-qemu user the Debian build resolves at start, /etc/default is
# a copy with the hook's /etc/default/diskfarm.  Nothing on the host
# changes; when the namespace's first process ends, every process in it
# (daemons, qemu) ends too.  Serial consoles are <serial type='stdio'>:
# qemu's output goes through virtlogd to /var/log/libvirt/qemu/NAME.log.
#
# `libvirt-provision.sh realos`: web01 (ISO) and part01 (partition) boot a
# real OS instead (tests/e2e/lib/make-golden-linux.sh, small initramfs:
# root on iSCSI through the iBFT, portal 10.0.2.2), provisioned with
# `--cache server-persistent`; each runs its workload to the end marker
# with a clean OS log and powers off, libvirt runs the hook's release, and
# the boot counter the OS wrote is then in that device's cache (read
# through device/<name>), not in vdisk/golden; store files unchanged.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
. "$(dirname "$0")/lib/realos.sh"
MODE=${1:-mbr}
case $MODE in mbr|realos) ;; *) e2e_fail "unknown mode '$MODE' (mbr, realos)" ;; esac
: "${STREAMSVC:?STREAMSVC not set}"
: "${DISKFARM:?DISKFARM not set}"
BDM=${BDM:?BDM not set}
HOOK=$(cd "$(dirname "$0")/../.." && pwd)/dist/libvirt/hooks/qemu.d/diskfarm
e2e_init
[ "$(id -u)" -eq 0 ] || e2e_skip "needs root (a private system-mode libvirtd in its own namespaces)"
e2e_need libvirtd virtlogd virsh unshare qemu-img qemu-system-x86_64 python3
for f in /usr/lib/ISOLINUX/isolinux.bin /usr/lib/ipxe/ipxe.lkrn "$HOOK"; do
  [ -f "$f" ] || e2e_skip "$f missing"
done
"$DISKFARM" vm --help >/dev/null 2>&1 || e2e_skip "diskfarm built without vm (libvirt)"
T=$E2E_TMP
FARM=$T/farm
NS=$T/ns
df() { "$DISKFARM" --farm "$FARM" "$@"; }
hexhyp() { echo "$1" | tr : -; }
VMS="web01 web02 web03 part01" WEBS=3 MEM=192 MARKER=DFMBR-DONE CACHE=server
[ "$MODE" = mbr ] || VMS="web01 part01" WEBS=1 MEM=384 MARKER=DISKFARM-WORKLOAD-END CACHE=server-persistent
NSPID=""
URI="qemu:///system?socket=$NS/run/libvirt-sock"
vsh() { timeout 30 virsh -q -c "$URI" "$@"; }

# Domains first (graceful: qemu ends, libvirt runs `release`), then the
# namespace's init (unshare itself ignores TERM while it waits): it stops
# both daemons; when it ends, the kernel ends whatever is left inside.
lv_cleanup() {
  set +e
  local n init
  if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
    for n in $VMS; do vsh destroy "$n" >/dev/null 2>&1; done
    init=$(cat "/proc/$NSPID/task/$NSPID/children" 2>/dev/null)
    [ -n "$init" ] && kill $init 2>/dev/null
    for n in $(seq 150); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$NSPID" 2>/dev/null
    wait "$NSPID" 2>/dev/null
  fi
  e2e_cleanup
}
trap lv_cleanup EXIT

show_logs() {
  local f
  for f in "$NS"/var-up/log/libvirt/libvirtd.log "$T/streamsvc.log"; do
    [ -f "$f" ] && { echo "--- $f"; tail -25 "$f"; }
  done
  return 0
}

# ---- farm, stream server, boot ISO ---------------------------------------
df init >/dev/null
if [ "$MODE" = realos ]; then
  e2e_need nbdcopy debugfs e2fsck bc sfdisk
  realos_images "$T/img" small
  cp "$T/img/golden-small.img" "$T/disk.img"
else
  e2e_make_test_disk "$T/disk.img" DFLBA1-LIBVIRT 16
fi
df vdisk import golden "$T/disk.img" >/dev/null
store0=$(realos_store_sum "$FARM")
df collection add web --vdisk golden >/dev/null
df device add control --mac 52:54:00:cc:00:01 --vdisk golden --cache server >/dev/null
e2e_streamsvc_iscsi
port=$E2E_ISCSI_PORT
closed=$(e2e_free_port)     # nothing listens there: bootstrap failover
"$BDM" iso "$T/boot.iso" --server "10.0.2.2:$closed" --iscsi-port "$port" >/dev/null
"$BDM" partition "$T/boot.img" --server "10.0.2.2:$closed" --iscsi-port "$port" >/dev/null

# ---- the private libvirtd + virtlogd ---------------------------------------
mkdir -p "$NS/etc-libvirt/hooks/qemu.d" "$NS/run" "$NS/var-up" "$NS/var-work"
cp "$HOOK" "$NS/etc-libvirt/hooks/qemu.d/diskfarm"
chmod 0755 "$NS/etc-libvirt/hooks/qemu.d/diskfarm"
cat >"$NS/etc-libvirt/libvirtd.conf" <<EOF
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
cat >"$NS/etc-libvirt/virtlogd.conf" <<EOF
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
# qemu as root, no cgroups / private /dev / security labels: a container
# may have none of them.  stdio_handler: qemu output through virtlogd.
cat >"$NS/etc-libvirt/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "logd"
EOF
cp -a /etc/default "$NS/etc-default"
cat >"$NS/etc-default/diskfarm" <<EOF
DISKFARM=$DISKFARM
DISKFARM_FARM=$FARM
EOF
cp /etc/passwd "$NS/passwd"
cp /etc/group "$NS/group"
getent passwd libvirt-qemu >/dev/null ||
  echo 'libvirt-qemu:x:64055:64055:libvirt qemu (test):/nonexistent:/usr/sbin/nologin' >>"$NS/passwd"
getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >>"$NS/group"
cat >"$NS/init.sh" <<'EOF'
#!/bin/bash
# PID 1 of the test's namespace: private mounts, then virtlogd + libvirtd
# as its children; TERM stops both.
set -eu
NS=$1
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/libvirt
mount --bind "$NS/run" /run/libvirt
mount -t overlay overlay -o "lowerdir=/var,upperdir=$NS/var-up,workdir=$NS/var-work" /var
mount --bind "$NS/etc-libvirt" /etc/libvirt
mount --bind "$NS/etc-default" /etc/default
mount --bind "$NS/passwd" /etc/passwd
mount --bind "$NS/group" /etc/group
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt /var/cache/libvirt
echo mounted
virtlogd -f /etc/libvirt/virtlogd.conf & vl=$!
for _ in $(seq 50); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
libvirtd -f /etc/libvirt/libvirtd.conf & lv=$!
trap 'kill $lv 2>/dev/null; wait $lv; kill $vl 2>/dev/null; wait $vl; exit 0' TERM INT
wait
EOF
chmod +x "$NS/init.sh"
unshare --mount --propagation private --pid --fork --mount-proc --kill-child=TERM \
  "$NS/init.sh" "$NS" >"$NS/init.log" 2>&1 &
NSPID=$!
for _ in $(seq 150); do
  [ -S "$NS/run/libvirt-sock" ] && virsh -q -c "$URI" uri >/dev/null 2>&1 && break
  kill -0 "$NSPID" 2>/dev/null || break
  sleep 0.1
done
if ! virsh -q -c "$URI" uri >/dev/null 2>&1; then
  grep -q mounted "$NS/init.log" ||
    e2e_skip "cannot make the private namespace (unshare/mount/overlay): $(tail -3 "$NS/init.log")"
  e2e_skip "libvirtd did not start: $(tail -3 "$NS/init.log"; show_logs)"
fi
[ -S "$NS/run/virtlogd-sock" ] || e2e_fail "virtlogd socket missing"
e2e_pass "private libvirtd + virtlogd up ($URI)"

# ---- template, provision ---------------------------------------------------
qemu-img create -q -f qcow2 "$T/tpl.qcow2" 64M
cat >"$T/tpl.xml" <<EOF
<domain type='qemu'>
  <name>tpl-web</name>
  <memory unit='MiB'>$MEM</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='$T/tpl.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='52:54:00:aa:bb:cc'/><model type='e1000'/></interface>
    <serial type='stdio'><target port='0'/></serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
vsh define "$T/tpl.xml" >/dev/null || e2e_fail "template not defined: $(show_logs)"
out=$(df vm provision --connect "$URI" --template tpl-web --count "$WEBS" --collection web \
      --name-template 'web{02}' --boot iso --media "$T/boot.iso" --cache "$CACHE" 2>&1) ||
  e2e_fail "vm provision: $out"
out=$(df vm provision --connect "$URI" --template tpl-web --count 1 --collection web \
      --name-template 'part{02}' --boot partition --media "$T/boot.img" --cache "$CACHE" 2>&1) ||
  e2e_fail "vm provision --boot partition: $out"
declare -A MAC GEN0
for n in $VMS; do
  case $n in
    web*) media=$T/boot.iso kind=cdrom ;;
    *) media=$T/boot.img kind=disk ;;
  esac
  MAC[$n]=$(df --json device show "$n" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mac"])')
  x=$(vsh dumpxml --inactive "$n") || e2e_fail "$n not defined"
  echo "$x" | grep -q "<mac address='${MAC[$n]}'/>" || e2e_fail "$n: MAC ${MAC[$n]} not in its domain"
  echo "$x" | grep -q "tpl.qcow2" && e2e_fail "$n: template disk kept"
  echo "$x" | python3 -c '
import sys, xml.etree.ElementTree as ET
d = ET.fromstring(sys.stdin.read())
m = [x for x in d.iter("disk") if x.find("source").get("file") == sys.argv[1]]
assert len(m) == 1 and m[0].get("device") == sys.argv[2], "media not attached"
assert m[0].find("boot").get("order") == "1", "media not first"
assert sys.argv[2] == "cdrom" or m[0].find("readonly") is not None, "writable"
assert d.find("os/boot") is None, "os/boot kept"' "$media" "$kind" ||
    e2e_fail "$n: $x"
  g=$(df --json device show "$n" | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
  GEN0[$n]=$g
done
uuids=$(for n in $VMS; do vsh domuuid "$n"; done | sort -u | wc -l)
[ "$uuids" -eq "$(echo $VMS | wc -w)" ] || e2e_fail "UUIDs not distinct"
e2e_pass "vm provision: $VMS (ISO, boot partition) defined in libvirtd (own UUID/MAC, media first) and registered"
# attach-media on the template itself: the qemu driver takes it
out=$(df vm attach-media tpl-web --iso "$T/boot.iso" --connect "$URI" 2>&1) ||
  e2e_fail "attach-media on the template: $out"
x=$(vsh dumpxml --inactive tpl-web)
echo "$x" | python3 -c '
import sys, xml.etree.ElementTree as ET
d = ET.fromstring(sys.stdin.read())
order = {x.find("target").get("dev"): x.find("boot").get("order")
         for x in d.iter("disk") if x.find("boot") is not None}
assert order == {"hda": "1", "vda": "2"}, order' || e2e_fail "template boot order: $x"
e2e_pass "vm attach-media: the template boots the ISO first, its disk (was <os><boot dev=hd>) second"

# ---- boot all four at once ------------------------------------------------
t0=$(date +%s.%N)
for n in $VMS; do
  vsh start "$n" >/dev/null 2>"$T/start-$n.err" ||
    e2e_fail "virsh start $n: $(cat "$T/start-$n.err"; show_logs)"
done
# prepare ran before qemu: a new generation, audited, by the hook only
for n in $VMS; do
  g=$(df --json device show "$n" | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
  [ "$g" -eq $((${GEN0[$n]} + 1)) ] ||
    e2e_fail "$n: generation ${GEN0[$n]} -> $g after start (hook prepare not run?)"
done
resets() { df --json audit --limit 0 | python3 -c '
import json, sys
print(sum(1 for a in json.load(sys.stdin) if a["action"] == "device.reset" and a["object"] == sys.argv[1]))' "$1"; }
for n in $VMS; do
  [ "$(resets "$n")" -eq 1 ] || e2e_fail "$n: $(resets "$n") device.reset audit rows after start, want 1"
done
e2e_pass "libvirt ran the hook on prepare: one new boot generation per domain (audit device.reset)"

qlog() { echo "$NS/var-up/log/libvirt/qemu/$1.log"; }
deadline=$(( $(date +%s) + $([ "$MODE" = mbr ] && echo 150 || echo 400) ))
while :; do
  left=0
  for n in $VMS; do grep -q "$MARKER" "$(qlog "$n")" 2>/dev/null || left=$((left + 1)); done
  [ "$left" -eq 0 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    for n in $VMS; do echo "--- $n"; tail -c 2000 "$(qlog "$n")" 2>/dev/null; done
    show_logs
    e2e_fail "$left domains without $MARKER"
  fi
  sleep 1
done
t1=$(date +%s.%N)
if [ "$MODE" = realos ]; then
  # The workload powers off: libvirt runs the hook's release; the
  # server-persistent cache survives it.  The serial output starts at the
  # initramfs's first line (libvirt's own lines, the qemu command line
  # among them, come first; the kernel's messages are in the workload's
  # DISKFARM-KLOG dump of dmesg).
  for n in $VMS; do
    for _ in $(seq 60); do [ "$(vsh domstate "$n")" = "shut off" ] && break; sleep 0.5; done
    [ "$(vsh domstate "$n")" = "shut off" ] || e2e_fail "$n did not power off after its workload"
    sed -n '/iscsistart\|diskfarm-initrd\|DISKFARM-/,$p' "$(qlog "$n")" >"$T/serial-$n.log"
    realos_check_boot "$T/serial-$n.log" 1
    # iPXE's login, then the OS's from the iBFT (same target, by MAC)
    [ "$(grep -c "iSCSI login: .* -> iqn.2026-11.org.diskfarm:$(hexhyp "${MAC[$n]}")" "$T/streamsvc.log")" -ge 2 ] ||
      e2e_fail "$n: want an iPXE and an OS login for ${MAC[$n]}: $(grep 'iSCSI login' "$T/streamsvc.log")"
    g=$(df --json device show "$n" | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
    [ "$g" -eq $((${GEN0[$n]} + 2)) ] ||
      e2e_fail "$n: generation $g after poweroff, want $((${GEN0[$n]} + 2)) (hook release)"
    c=$(realos_cached_count "nbd+unix:///device/$n?socket=$T/nbd.sock")
    [ "$c" = 1 ] || e2e_fail "$n: device/$n holds $c boot counter lines, want 1"
  done
  [ "$(realos_cached_count "nbd+unix:///vdisk/golden?socket=$T/nbd.sock")" = none ] ||
    e2e_fail "the OS's writes reached vdisk/golden"
  [ "$(realos_store_sum "$FARM")" = "$store0" ] || e2e_fail "the vDisk store changed"
  e2e_pass "$VMS: a real OS ran its root on iSCSI through the iBFT to the workload's end in $(python3 -c "print(round($t1-$t0,1))") s; powered off, released; its writes in its server-persistent cache only"
  exit 0
fi
for n in $VMS; do
  l=$(qlog "$n")
  grep -q 'DFMBR-LBA1 DFLBA1-LIBVIRT' "$l" || e2e_fail "$n: int13 read wrong"
  grep -q 'DFMBR-LBA2 DFMBR-WRITTEN' "$l" || e2e_fail "$n: int13 write not read back"
  grep -q "iSCSI login: .* -> iqn.2026-11.org.diskfarm:$(hexhyp "${MAC[$n]}")" "$T/streamsvc.log" ||
    e2e_fail "$n: no streamsvc iSCSI login for ${MAC[$n]}"
done
e2e_pass "web01-03 (ISO) + part01 (partition) boot together through BDM media -> streamsvc iSCSI in $(python3 -c "print(round($t1-$t0,1))") s (serial via virtlogd)"

out=$(df vm list --connect "$URI")
for n in $VMS; do
  echo "$out" | grep -E "^$n +running +${MAC[$n]} +$n +golden " >/dev/null ||
    e2e_fail "vm list: $out"
done
e2e_pass "vm list: the four running domains with their device and vDisk"

# ---- each write in its own cache ---------------------------------------------
# Paused, the domains keep their session and boot generation.
for n in $VMS; do vsh suspend "$n" >/dev/null || e2e_fail "suspend $n"; done
uri() { echo "nbd+unix:///$1?socket=$T/nbd.sock"; }
for n in $VMS; do
  qemu-img convert -f raw -O raw "$(uri "device/$n")" "$T/$n.raw" ||
    e2e_fail "cannot read device/$n over NBD"
  dd if="$T/$n.raw" bs=512 skip=2 count=1 status=none | grep -q DFMBR-WRITTEN ||
    e2e_fail "$n: the int13 write is not in its cache"
  dd if="$T/$n.raw" bs=512 skip=1 count=1 status=none | grep -q DFLBA1-LIBVIRT ||
    e2e_fail "$n: the base is not under its cache"
done
qemu-img compare -q -f raw -F raw "$T/disk.img" "$(uri vdisk/golden)" ||
  e2e_fail "the vDisk changed"
qemu-img compare -q -f raw -F raw "$T/disk.img" "$(uri device/control)" ||
  e2e_fail "a device that did not boot does not see the plain base"
e2e_pass "each domain's write is in its own cache; vDisk and an unbooted device untouched"

# ---- destroy: the hook's release drops the cache -----------------------------
for n in $VMS; do vsh destroy "$n" >/dev/null || e2e_fail "destroy $n"; done
for n in $VMS; do
  g=$(df --json device show "$n" | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
  [ "$g" -eq $((${GEN0[$n]} + 2)) ] ||
    e2e_fail "$n: generation $g after destroy, want $((${GEN0[$n]} + 2)) (hook release)"
  [ "$(resets "$n")" -eq 2 ] || e2e_fail "$n: release not audited"
  qemu-img compare -q -f raw -F raw "$T/disk.img" "$(uri "device/$n")" ||
    e2e_fail "$n: the non-persistent cache survived release"
done
e2e_pass "virsh destroy: libvirt ran the hook on release, each cache dropped"
