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
