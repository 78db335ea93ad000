#!/bin/bash
# --json has one shape across the console: every command's output parses
# (python3's json module), list commands print arrays, other commands one
# object, and each name means one thing everywhere:
#   version        a version number (never "number")
#   versions       a list of version objects; version_count a count
#   devices        a list (of names or of device objects); device_count a count
#   detail         (audit) a JSON object or null, never JSON inside a string
# Checked on the outputs of every command this test can run without
# libguestfs or a hypervisor, plus `vm list` on libvirt's test driver.
. "$(dirname "$0")/lib.sh"
need qemu-img

OUT=$T/out
mkdir -p "$OUT"
n=0
# j KIND CMD...: run diskfarm --json CMD; KIND is list or object
j() {
  local kind=$1; shift
  n=$((n + 1))
  df --json "$@" >"$OUT/$n.json" 2>"$T/err" || fail "diskfarm --json $*: $(cat "$T/err")"
  printf '%s\t%s\n' "$kind" "$*" >"$OUT/$n.cmd"
}

j object init
qemu-img create -q -f raw "$T/disk.raw" 4M
j object vdisk import base "$T/disk.raw" --format raw
j object vdisk import other "$T/disk.raw" --format raw
j list vdisk list
j object collection add lab --vdisk base
j object device add pc1 --mac 52:54:00:00:00:01 --vdisk base --collection lab
j object device add pc2 --mac 52:54:00:00:00:02 --vdisk base --type test
j object device add pc3 --mac 52:54:00:00:00:03 --vdisk base --type maintenance
j list device list
j object device show pc1
j object device set pc2 --quota 64M
j object device reset pc1
j list collection list
j object collection show lab
j object version new base
j object version seal base
j object version promote base 1 --to production
j object version revert base
j list version list base --admin 127.0.0.1:1
j list version list other --admin 127.0.0.1:1
j object version merge base --base
j object version delete base 1 --admin 127.0.0.1:1
j object vdisk show base
j list vdisk verify base
j object vdisk set base --auto-merge-depth 3
j object vdisk export base "$T/out.raw" --format raw
j object vdisk remove other
j object server add ss1 --address 127.0.0.1 --admin-port 1
j list server list --no-health
j object server show ss1
j object session list --admin 127.0.0.1:1
j object session list --device pc1 --admin 127.0.0.1:1
j object server remove ss1
j object farm set auto-add on --collection lab
j object farm show
j object bootstrap dhcp-config --address 10.0.0.5
j object config get farm.dir
j list config show
j object device remove pc3
# an audit row as older versions wrote settings: a plain-text detail
if [ -n "$DF_DB_CONF" ] || command -v sqlite3 >/dev/null; then
  db_sql "INSERT INTO audit (at, who, action, object, detail) VALUES ('2026-01-01T00:00:00Z', 'old', 'setting.set', 'legacy', 'on')"
fi
j list audit --limit 0
if "$DISKFARM" vm --help >/dev/null 2>&1; then
  j list vm list --connect test:///default
fi
if [ -f /usr/lib/ipxe/undionly.kpxe ]; then
  j list bootstrap sync
fi

python3 - "$OUT" "$( [ -n "$DF_DB_CONF" ] && echo psql || command -v sqlite3 || true)" <<'PY' || fail "--json shapes"
import glob, json, os, sys
out = sys.argv[1]
have_sqlite3 = sys.argv[2] != ""
bad = []
def walk(cmd, x, path):
    if isinstance(x, list):
        for i, y in enumerate(x):
            walk(cmd, y, "%s[%d]" % (path, i))
        return
    if not isinstance(x, dict):
        return
    def need(key, ok, what):
        if key in x and not ok(x[key]):
            bad.append("%s: %s.%s is %r, want %s" % (cmd, path, key, x[key], what))
    if "number" in x:
        bad.append("%s: %s has 'number' (a version number is 'version')" % (cmd, path))
    need("version", lambda v: v is None or isinstance(v, (int, str)), "a version")
    need("versions", lambda v: isinstance(v, list), "a list")
    need("devices", lambda v: isinstance(v, list), "a list")
    need("version_count", lambda v: isinstance(v, int), "a count")
    need("device_count", lambda v: isinstance(v, int), "a count")
    need("detail", lambda v: v is None or isinstance(v, dict), "an object or null")
    for k, v in x.items():
        walk(cmd, v, "%s.%s" % (path, k))
count = 0
for f in sorted(glob.glob(os.path.join(out, "*.json")), key=lambda p: int(os.path.basename(p)[:-5])):
    kind, cmd = open(f[:-5] + ".cmd").read().rstrip("\n").split("\t", 1)
    try:
        d = json.load(open(f))
    except ValueError as e:
        bad.append("%s: not JSON (%s)" % (cmd, e))
        continue
    want = list if kind == "list" else dict
    if not isinstance(d, want):
        bad.append("%s: %s, want %s" % (cmd, type(d).__name__, want.__name__))
    walk(cmd, d, "$")
    count += 1
# the shapes this issue changed, on the values this test made
def load(f):
    try:
        return json.load(open(f))
    except ValueError:
        return None
by = {open(f[:-5] + ".cmd").read().split("\t", 1)[1].strip(): load(f)
      for f in glob.glob(os.path.join(out, "*.json"))}
vl = by["version list base --admin 127.0.0.1:1"]
checks = [
    ("version list: production version booted by pc1", lambda: [v["devices"] for v in vl if v["state"] == "production"] == [["pc1"]]),
    ("version list: device names", lambda: all(isinstance(n, str) for v in vl for n in v["devices"])),
    ("version list: a version nobody boots", lambda: [v["devices"] for v in by["version list other --admin 127.0.0.1:1"]] == [[]]),
    ("vdisk list: version_count", lambda: {v["name"]: v["version_count"] for v in by["vdisk list"]} == {"base": 1, "other": 1}),
    ("vdisk remove: version_count removed", lambda: by["vdisk remove other"] == {"name": "other", "version_count": 1}),
    ("vdisk show: versions is the list", lambda: [v["version"] for v in by["vdisk show base"]["versions"]] == [0, 2]),
    ("collection show: device_count and devices", lambda: by["collection show lab"]["device_count"] == 1
        and [x["name"] for x in by["collection show lab"]["devices"]] == ["pc1"]),
    ("audit: device.reset detail is an object", lambda: any(a["action"] == "device.reset" and a["object"] == "pc1"
        and isinstance(a["detail"]["generation"], int) for a in by["audit --limit 0"])),
    ("audit: setting.set detail is {value}", lambda: any(a["action"] == "setting.set"
        and a["object"] == "auto-add.collection" and a["detail"] == {"value": "lab"} for a in by["audit --limit 0"])),
    ("audit: a plain-text detail of an old row is wrapped as {text}", lambda: not have_sqlite3
        or [a["detail"] for a in by["audit --limit 0"] if a["object"] == "legacy"] == [{"text": "on"}]),
    ("session list: sessions, unreachable (ss1 once) and ignored lists", lambda: by["session list --admin 127.0.0.1:1"]["sessions"] == []
        and [u["server"] for u in by["session list --admin 127.0.0.1:1"]["unreachable"]] == ["ss1"]
        and by["session list --admin 127.0.0.1:1"]["ignored"] == []
        and by["session list --admin 127.0.0.1:1"]["answered_server_count"] == 0),
    ("device show: live and its sessions list", lambda: by["device show pc1"]["live"] is False and by["device show pc1"]["sessions"] == []),
    ("device show: cache_lease null before any server claimed the cache", lambda: by["device show pc1"]["cache_lease"] is None),
    ("device reset: fenced_session_count", lambda: by["device reset pc1"]["fenced_session_count"] == 0),
    ("dhcp-config: one object with both texts", lambda: by["bootstrap dhcp-config --address 10.0.0.5"]["next_server"] == "10.0.0.5"
        and "dhcp-boot=tag:ipxe," in by["bootstrap dhcp-config --address 10.0.0.5"]["dnsmasq"]
        and "next-server 10.0.0.5;" in by["bootstrap dhcp-config --address 10.0.0.5"]["isc"]),
    ("dhcp-config: UEFI HTTP boot URI and class", lambda: by["bootstrap dhcp-config --address 10.0.0.5"]["http_boot_url"] == "http://10.0.0.5:80/ipxe.efi"
        and "dhcp-option-force=tag:efihttp,60,HTTPClient" in by["bootstrap dhcp-config --address 10.0.0.5"]["dnsmasq"]
        and 'option vendor-class-identifier "HTTPClient";' in by["bootstrap dhcp-config --address 10.0.0.5"]["isc"]),
]
for what, ok in checks:
    try:
        good = ok()
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        good = False
        what += " (%r)" % e
    if not good:
        bad.append("check failed: " + what)
if bad:
    bad.append("audit: %s" % json.dumps(by.get("audit --limit 0")))
    sys.exit("\n".join(bad))
print("%d outputs checked" % count)
PY
pass "$n --json outputs parse; lists are arrays; version/versions/devices/detail have one shape"
