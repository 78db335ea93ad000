#!/bin/bash
# diskfarm vm: libvirt API on the test driver (test:///default and a
# test:///FILE node with a template).  The test driver keeps no state
# between processes, so each command's effect is checked in its own
# output (--print-xml: the definition libvirt stored) and in the farm DB.
. "$(dirname "$0")/lib.sh"
need xmllint
"$DISKFARM" vm --help >/dev/null 2>&1 || skip "diskfarm built without vm"
df init >/dev/null

cat >"$T/node.xml" <<XML
<node>
  <domain type='test'>
    <name>tpl</name>
    <memory>262144</memory>
    <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
    <devices>
      <disk type='file' device='disk'><source file='/var/lib/tpl.qcow2'/>
        <target dev='vda' bus='virtio'/></disk>
      <interface type='network'><mac address='52:54:00:aa:aa:aa'/>
        <source network='default'/></interface>
    </devices>
  </domain>
  <domain type='test'>
    <name>tpl-efi</name>
    <memory>262144</memory>
    <os><type arch='x86_64' machine='q35'>hvm</type>
      <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
      <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/tpl-efi_VARS.fd</nvram>
    </os>
    <devices><interface type='network'><mac address='52:54:00:aa:aa:ab'/>
      <source network='default'/></interface></devices>
  </domain>
  <domain type='test'>
    <name>tpl-sb</name>
    <memory>262144</memory>
    <features><smm state='on'/></features>
    <os><type arch='x86_64' machine='q35'>hvm</type>
      <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
      <nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/tpl-sb_VARS.fd</nvram>
    </os>
    <devices><interface type='network'><mac address='52:54:00:aa:aa:ac'/>
      <source network='default'/></interface></devices>
  </domain>
  <domain type='test'>
    <name>tpl-auto</name>
    <memory>262144</memory>
    <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os>
    <devices><interface type='network'><mac address='52:54:00:aa:aa:ad'/>
      <source network='default'/></interface></devices>
  </domain>
  <domain type='test'>
    <name>known</name>
    <memory>262144</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <devices><interface type='network'><mac address='52:54:00:12:34:99'/>
      <source network='default'/></interface></devices>
  </domain>
</node>
XML
NODE="test://$T/node.xml"

# attach-media: ISO first in the boot order, <os><boot> replaced
x=$(df vm attach-media tpl --iso /srv/bdm.iso --connect "$NODE" --print-xml)
[ "$(echo "$x" | xmllint --xpath 'string(//disk[source/@file="/srv/bdm.iso"]/@device)' -)" = cdrom ] || fail "no cdrom: $x"
[ "$(echo "$x" | xmllint --xpath 'string(//disk[source/@file="/srv/bdm.iso"]/boot/@order)' -)" = 1 ] || fail "iso not first"
[ "$(echo "$x" | xmllint --xpath 'string(//disk[source/@file="/srv/bdm.iso"]/target/@bus)' -)" = ide ] || fail "iso bus on pc"
[ "$(echo "$x" | xmllint --xpath 'count(/domain/os/boot)' -)" = 0 ] || fail "os/boot kept"
x=$(df vm attach-media tpl --partition /srv/bdm.img --connect "$NODE" --print-xml)
echo "$x" | xmllint --xpath '//disk[source/@file="/srv/bdm.img" and readonly and target/@bus="virtio" and boot/@order="1"]' - >/dev/null || fail "partition disk: $x"
pass "attach-media: ISO (IDE CD-ROM) / partition (read-only virtio) first in boot order"
out=$(df vm attach-media test --iso /srv/bdm.iso --connect test:///default) || fail "test:///default: $out"
echo "$out" | grep -q "domain 'test' boots first from /srv/bdm.iso" || fail "message: $out"
out=$(df vm attach-media nosuch --iso /srv/x.iso --connect test:///default 2>&1) && fail "unknown domain accepted"
echo "$out" | grep -q "^diskfarm: nosuch: .*[Dd]omain" || fail "message: $out"
out=$(df vm attach-media test --iso /a.iso --partition /b.img --connect test:///default 2>&1) && fail "both media accepted"
out=$(df vm attach-media test --iso rel.iso --connect test:///default 2>&1) && fail "relative path accepted"
echo "$out" | grep -q "must be absolute" || fail "message: $out"
pass "attach-media: test:///default, unknown domain, two media, relative path"

# provision: 3 clones registered as devices of the collection
qemu-img create -q -f raw "$T/g.raw" 1M
df vdisk import golden "$T/g.raw" >/dev/null
df collection add web --vdisk golden >/dev/null
x=$(df vm provision --template tpl --count 3 --collection web --name-template 'web{02}' \
     --boot iso --media /srv/bdm.iso --connect "$NODE" --print-xml)
[ "$(echo "$x" | grep -c '<name>web0[123]</name>')" -eq 3 ] || fail "3 domains: $x"
echo "$x" | grep -q "tpl.qcow2" && fail "template disk kept in clones"
[ "$(echo "$x" | grep -c "<uuid>")" -eq 3 ] || fail "uuids"
[ "$(echo "$x" | grep -o '<uuid>[^<]*' | sort -u | wc -l)" -eq 3 ] || fail "uuids not unique"
echo "$x" | grep -q "52:54:00:aa:aa:aa" && fail "template MAC kept"
for n in web01 web02 web03; do
  mac=$(df --json device show $n | python3 -c 'import json,sys; print(json.load(sys.stdin)["mac"])')
  echo "$x" | grep -q "<mac address='$mac'/>" || fail "$n MAC $mac not in its domain"
  df --json device show $n | grep -q '"collection" *: *"web"' || fail "$n collection"
done
pass "provision: web01-03 defined (new name/UUID/MAC, no template disk, ISO first) and registered"
out=$(df vm provision --template tpl --count 1 --collection web --name-template 'web{02}' \
     --connect "$NODE" 2>&1) && fail "duplicate device name accepted"
out=$(df vm provision --template tpl --count 1 --collection web --name-template 'x' --connect "$NODE" 2>&1) && fail "template without field"
echo "$out" | grep -q "needs a {NN} or {n} field" || fail "message: $out"
out=$(df vm provision --template tpl --count 1 --collection web --name-template 'p{n}' --boot iso --connect "$NODE" 2>&1) && fail "iso without media"
out=$(df vm provision --template nosuch --count 1 --collection web --name-template 'q{n}' --connect "$NODE" 2>&1) && fail "unknown template"
df --json device show q1 >/dev/null 2>&1 && fail "device left registered after a failed define"
x=$(df vm provision --template tpl --count 1 --collection web --name-template 'pxe{n}' --connect "$NODE" --print-xml)
[ "$(echo "$x" | xmllint --xpath 'string(//interface/boot/@order)' -)" = 1 ] || fail "pxe boot order"
pass "provision: duplicate, bad template, missing media, unknown template (nothing registered), pxe"

# provision from UEFI templates: each clone its own NVRAM (the template's
# VARS path dropped, its VARS template kept: libvirt makes one per domain);
# Secure Boot templates refused (nothing registered) unless --no-secure-boot,
# which leaves libvirt to pick a firmware with secure-boot and enrolled-keys off
x=$(df vm provision --template tpl-efi --count 2 --collection web --name-template 'efi{n}' \
     --connect "$NODE" --print-xml) || fail "provision from a UEFI template"
echo "$x" | grep -q "tpl-efi_VARS.fd" && fail "clones share the template's NVRAM file: $x"
[ "$(echo "$x" | grep -c "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'")" -eq 2 ] ||
  fail "the clones lost the VARS template: $x"
echo "$x" | grep -q "OVMF_CODE_4M.fd</loader>" || fail "loader dropped: $x"
for t in tpl-sb tpl-auto; do
  out=$(df vm provision --template $t --count 1 --collection web --name-template "sb$t{n}" \
        --connect "$NODE" 2>&1) && fail "$t: Secure Boot template accepted"
  echo "$out" | grep -q "^diskfarm: template '$t' boots with UEFI Secure Boot (.*): the firmware refuses Debian's unsigned ipxe.efi .*give --no-secure-boot" ||
    fail "message: $out"
  df --json device show "sb${t}1" >/dev/null 2>&1 && fail "device registered for a refused Secure Boot template"
done
x=$(df vm provision --template tpl-sb --count 1 --collection web --name-template 'nosb{n}' \
     --no-secure-boot --connect "$NODE" --print-xml) || fail "provision --no-secure-boot"
echo "$x" | grep -q "secure='yes'\|OVMF_CODE_4M.ms.fd\|tpl-sb_VARS" && fail "Secure Boot firmware kept: $x"
[ "$(echo "$x" | xmllint --xpath "string(/domain/os/@firmware)" -)" = efi ] || fail "not firmware='efi': $x"
[ "$(echo "$x" | xmllint --xpath "count(/domain/os/firmware/feature[@enabled='no'][@name='secure-boot' or @name='enrolled-keys'])" -)" = 2 ] ||
  fail "secure-boot / enrolled-keys not disabled: $x"
pass "provision UEFI: own NVRAM per clone; Secure Boot templates refused with the fix named; --no-secure-boot"

# list: domains with their device
df device add known --mac 52:54:00:12:34:99 --vdisk golden >/dev/null
out=$(df vm list --connect "$NODE")
echo "$out" | grep -E "^known +running +52:54:00:12:34:99 +known +golden +0 +1" >/dev/null || fail "list: $out"
echo "$out" | grep -E "^tpl .* - +- +- +-$" >/dev/null || fail "list tpl: $out"
pass "list: domains with device, vDisk, version, generation"

# the libvirt hook, called as libvirt calls it (XML on stdin)
HOOK=$TESTS_SRCDIR/../../dist/libvirt/hooks/qemu.d/diskfarm
[ -x "$HOOK" ] || fail "hook not found at $HOOK"
hook() { DISKFARM=$DISKFARM DISKFARM_FARM=$FARM "$HOOK" "$@"; }
X="<domain><name>vm7</name><devices><interface type='network'><mac address='52:54:00:07:07:07'/></interface></devices></domain>"
echo "$X" | hook vm7 prepare begin - 2>/dev/null || fail "hook failed on an unknown domain"
df --json device show 52:54:00:07:07:07 >/dev/null 2>&1 && fail "registered with auto-add off"
df farm set auto-add on --collection web >/dev/null
echo "$X" | hook vm7 prepare begin - 2>"$T/hook.err" || fail "hook prepare: $(cat "$T/hook.err")"
g1=$(df --json device show vm7 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
echo "$X" | hook vm7 started begin - || fail "hook started"
echo "$X" | hook vm7 release end - 2>/dev/null || fail "hook release"
g2=$(df --json device show vm7 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
[ -n "$g1" ] && [ "$g2" -eq $((g1 + 1)) ] || fail "generation $g1 -> $g2"
echo "<domain/>" | hook x prepare begin - || fail "hook on a domain without NIC"
pass "hook: unknown domain left alone, auto-add on prepare, new generation on release"

# the hook finds the farm through diskfarm.conf alone (no DISKFARM_FARM):
# [farm] dir, read by the console it calls; a broken file fails prepare
printf '[farm]\ndir=%s\n' "$FARM" >"$T/hook.conf"
conf_hook() { env -u DISKFARM_FARM DISKFARM=$DISKFARM DISKFARM_CONFIG=$1 "$HOOK" vm7 "$2" begin -; }
echo "$X" | conf_hook "$T/hook.conf" prepare 2>"$T/hook.err" || fail "hook prepare via diskfarm.conf: $(cat "$T/hook.err")"
g3=$(df --json device show vm7 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
[ "$g3" -eq $((g2 + 1)) ] || fail "hook via diskfarm.conf: generation $g2 -> $g3"
printf '[farm]\ndir=%s\n[streamsvc]\nnbd_listen=:1\n' "$FARM" >"$T/bad-hook.conf"
if echo "$X" | conf_hook "$T/bad-hook.conf" prepare 2>"$T/hook.err"; then fail "hook prepare ran with a broken diskfarm.conf"; fi
grep -q "bad-hook.conf:4: unknown key 'nbd_listen' in group \[streamsvc\]" "$T/hook.err" || fail "hook error: $(cat "$T/hook.err")"
g4=$(df --json device show vm7 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
[ "$g4" -eq "$g3" ] || fail "hook with a broken diskfarm.conf changed the generation"
pass "hook: farm from diskfarm.conf [farm] dir; a broken diskfarm.conf fails prepare ($(cat "$T/hook.err"))"

# provision --cache hypervisor: the device is registered with mode
# hypervisor and its overlay's backing is its NBD export
need qemu-img qemu-io
mkdir -p "$T/disks"
out=$(df vm provision --template tpl --count 1 --collection web --name-template 'hr{n}' \
      --cache hypervisor --nbd 127.0.0.1:10809 --disk-dir disks --connect "$NODE" 2>&1) &&
  fail "relative --disk-dir accepted"
echo "$out" | grep -q "absolute" || fail "message: $out"
df --json device show hr1 >/dev/null 2>&1 && fail "device left registered after a refused --disk-dir"
x=$(df vm provision --template tpl --count 1 --collection web --name-template 'hv{n}' \
     --cache hypervisor --nbd 127.0.0.1:10809 --disk-dir "$T/disks" --connect "$NODE" --print-xml) ||
  fail "provision --cache hypervisor"
df --json device show hv1 | grep -q '"cache_mode" *: *"hypervisor"' || fail "hv1 not in mode hypervisor"
OV=$T/disks/hv1.qcow2
[ "$(echo "$x" | xmllint --xpath 'string(//disk[source/@file="'"$OV"'"]/boot/@order)' -)" = 1 ] ||
  fail "overlay disk not first: $x"
qemu-img info --output=json "$OV" >"$T/ov.json" || fail "no overlay at $OV"
jcheck "$T/ov.json" 'd["format"] == "qcow2"' \
  'd["backing-filename"] == "nbd://127.0.0.1:10809/device/hv1"' \
  'd["backing-filename-format"] == "raw"' 'd["virtual-size"] == 1 << 20'
pass "provision --cache hypervisor: device mode hypervisor, overlay backed by nbd://127.0.0.1:10809/device/hv1"

# without --nbd the overlay reads through this host's relay (streamsvc
# --relay on /run/diskfarm/relay.sock); the hook keeps that backing and
# says when the relay's socket is missing
RELAY_URI="nbd+unix:///device/hy1?socket=/run/diskfarm/relay.sock"
x2=$(df vm provision --template tpl --count 1 --collection web --name-template 'hy{n}' \
     --cache hypervisor --disk-dir "$T/disks" --connect "$NODE" --print-xml 2>&1) ||
  fail "provision --cache hypervisor without --nbd: $x2"
OV2=$T/disks/hy1.qcow2
qemu-img info --output=json "$OV2" >"$T/ov.json" || fail "no overlay at $OV2"
jcheck "$T/ov.json" "d['backing-filename'] == '$RELAY_URI'" 'd["virtual-size"] == 1 << 20'
echo "$x2" | hook hy1 prepare begin - 2>"$T/hook.err" || fail "hook prepare hy1: $(cat "$T/hook.err")"
qemu-img info --output=json "$OV2" >"$T/ov.json"
jcheck "$T/ov.json" "d['backing-filename'] == '$RELAY_URI'"
if [ ! -S /run/diskfarm/relay.sock ]; then
  grep -q "hy1.qcow2: .*/run/diskfarm/relay.sock is not a socket: is streamsvc --relay running" "$T/hook.err" ||
    fail "hook log: $(cat "$T/hook.err")"
fi
pass "provision --cache hypervisor without --nbd: overlay backed by the relay ($RELAY_URI)"

# the hook on prepare: a fresh overlay (same file, backing, size); a disk
# whose backing is another device's export is left alone; release: nothing
# rw FILE CMD: qemu-io on the overlay alone (backing null: no NBD server here)
rw() { qemu-io -c "$2" "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$1\"},\"backing\":null}" >"$T/rw.out" 2>&1 &&
       ! grep -q "failed" "$T/rw.out"; }
OTHER=$T/disks/other.qcow2
qemu-img create -q -f qcow2 -u -F raw -b nbd://127.0.0.1:10809/device/web01 "$OTHER" 1M
rw "$OV" "write -P 0xcd 64k 4k" || fail "write into the overlay: $(cat "$T/rw.out")"
rw "$OTHER" "write -P 0xce 64k 4k" || fail "write into the other overlay"
rw "$OV" "read -P 0xcd 64k 4k" || fail "overlay write not there"
ino=$(stat -c %i "$OV")
XH=$(echo "$x" | sed "s|</devices>|<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$OTHER'/><target dev='vdy' bus='virtio'/></disk></devices>|")
g1=$(df --json device show hv1 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
echo "$XH" | hook hv1 prepare begin - 2>"$T/hook.err" || fail "hook prepare hv1: $(cat "$T/hook.err")"
g2=$(df --json device show hv1 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
[ "$g2" -eq $((g1 + 1)) ] || fail "hv1 generation $g1 -> $g2 on prepare"
rw "$OV" "read -P 0 64k 4k" || fail "prepare kept the overlay's old writes: $(cat "$T/rw.out")"
rw "$OTHER" "read -P 0xce 64k 4k" || fail "prepare touched a disk backed by another device"
grep -q "other.qcow2: backing .* is not device/hv1; left alone" "$T/hook.err" || fail "hook log: $(cat "$T/hook.err")"
[ "$(stat -c %i "$OV")" = "$ino" ] || fail "overlay replaced by another file"
qemu-img info --output=json "$OV" >"$T/ov2.json"
jcheck "$T/ov2.json" 'd["backing-filename"] == "nbd://127.0.0.1:10809/device/hv1"' \
  'd["backing-filename-format"] == "raw"' 'd["virtual-size"] == 1 << 20'
rw "$OV" "write -P 0xcf 64k 4k" || fail "write after prepare"
echo "$XH" | hook hv1 release end - 2>"$T/hook.err" || fail "hook release hv1"
g3=$(df --json device show hv1 | sed -n 's/.*"generation" *: *\([0-9]*\).*/\1/p')
[ "$g3" -eq "$g2" ] || fail "release changed hv1's generation ($g2 -> $g3)"
rw "$OV" "read -P 0xcf 64k 4k" || fail "release touched the overlay"
pass "hook: prepare recreates hv1's overlay (old writes gone, same file/backing/size), other backings untouched; release keeps it"
