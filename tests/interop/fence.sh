#!/bin/bash
# fence: every session matches the farm (issue 9).  A session is bound at
# open to (device, boot generation, vdisk, version, cache mode).  When the
# farm moves on (device reset, device set --cache, device remove, a new
# maintenance version) its live NBD sessions are fenced: FLUSH and every
# other request fail, the server closes the connection within ~2 s even
# when it is idle, and a new session gets what the farm says now.  A newer
# boot generation of a server-persistent device takes over from a live old
# session at once and keeps every write the old session made.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-io nbdinfo python3
python3 -c 'import nbd' 2>/dev/null || skip "python3 nbd module not installed"

init_vdisk g 16 # zeroes from 3M to 7M
df device add m1 --mac 52:54:00:00:00:41 --vdisk g --type maintenance >/dev/null
df device add d1 --mac 52:54:00:00:00:42 --vdisk g >/dev/null
df device add d2 --mac 52:54:00:00:00:43 --vdisk g >/dev/null
df device add d3 --mac 52:54:00:00:00:44 --vdisk g >/dev/null
df device add p1 --mac 52:54:00:00:00:45 --vdisk g --cache server-persistent >/dev/null
start_streamsvc

# live.py MODE DEVICE [ARGS]: NBD sessions held open with libnbd while the
# farm changes under them (the change is a diskfarm command run from here).
cat >"$T/live.py" <<'PY'
import json, os, subprocess, sys, time, urllib.request
import nbd

SOCK, ADMIN, DISKFARM, FARM = (os.environ[k] for k in
                               ("SOCK", "ADMIN", "DISKFARM", "FARM"))
M = 1 << 20

def connect(dev):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///device/%s?socket=%s" % (dev, SOCK))
    return h

def farm(*args):
    subprocess.run([DISKFARM, "--farm", FARM] + list(args), check=True,
                   stdout=subprocess.DEVNULL)

def sessions(dev):
    s = json.load(urllib.request.urlopen(urllib.request.Request("http://%s/v1/sessions" % ADMIN, headers={"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]})))
    return [x for x in s if x["device"] == dev]

def refused(what, fn):
    try:
        fn()
    except nbd.Error as e:
        return str(e)
    sys.exit("%s was acknowledged after the farm moved on" % what)

def wait_closed(h, what, limit=2.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if h.aio_is_closed() or h.aio_is_dead():
            return time.monotonic() - t0
        try:
            h.poll(100)
        except nbd.Error:
            pass
    sys.exit("%s: connection still open %.1f s after the change" % (what, limit))

def fenced(dev, change):
    """A writer and an idle session; change the farm; both are fenced."""
    w, idle = connect(dev), connect(dev)
    w.pwrite(b"\xaa" * 65536, 3 * M)
    w.flush()
    farm(*change)
    err = refused("FLUSH", w.flush)
    t = wait_closed(idle, "idle session")
    wait_closed(w, "writer")
    refused("READ on the fenced idle session", lambda: idle.pread(512, 0))
    print("fenced: FLUSH refused (%s); idle session closed after %.2f s"
          % (err, t))

def fenced_idle(dev, change):
    """Sessions that send nothing: the periodic check must close them."""
    w, idle = connect(dev), connect(dev)
    w.pwrite(b"\xaa" * 65536, 3 * M)
    farm(*change)
    t = wait_closed(idle, "idle session")
    wait_closed(w, "writer")
    refused("WRITE on the fenced session",
            lambda: w.pwrite(b"\xbb" * 4096, 3 * M))
    print("fenced without a request: idle session closed after %.2f s" % t)

def clean(dev):
    h = connect(dev)
    assert h.pread(65536, 3 * M) == b"\0" * 65536, "new session: old cache"
    h.shutdown()

def binding(dev, gen, vdisk, version, cache, maint):
    h = connect(dev)
    h.pread(512, 0)
    mine = sessions(dev)
    assert len(mine) == 1, mine
    s = mine[0]
    want = {"device": dev, "generation": gen, "vdisk": vdisk,
            "version": version, "cache": cache, "maintenance": maint,
            "export": "device/" + dev}
    got = {k: s.get(k) for k in want}
    assert got == want, (got, want)
    h.shutdown()

def supersede(dev):
    old = connect(dev)
    old.pwrite(b"\x5a" * 65536, 3 * M)
    old.flush()
    old.pwrite(b"\x6b" * 65536, 4 * M)   # written, never flushed by it
    farm("device", "reset", dev)
    new = connect(dev)                    # at once: no waiting for a check
    assert new.pread(65536, 3 * M) == b"\x5a" * 65536, "flushed data lost"
    assert new.pread(65536, 4 * M) == b"\x6b" * 65536, "written data lost"
    err = refused("READ on the superseded session",
                  lambda: old.pread(512, 3 * M))
    wait_closed(old, "superseded session")
    new.pwrite(b"\x7c" * 4096, 5 * M)
    new.flush()
    new.shutdown()
    print("superseded: old session refused (%s), new one has its data" % err)

def maint_fenced(dev, vdisk):
    h = connect(dev)
    h.pread(512, 0)
    farm("version", "new", "--force", vdisk)  # live: the console now sees it
    wait_closed(h, "maintenance session bound to the old version")
    refused("READ", lambda: h.pread(512, 0))

mode = sys.argv[1]
if mode == "fenced":
    fenced(sys.argv[2], sys.argv[3:])
elif mode == "fenced-idle":
    fenced_idle(sys.argv[2], sys.argv[3:])
elif mode == "clean":
    clean(sys.argv[2])
elif mode == "binding":
    a = sys.argv[2:]
    binding(a[0], int(a[1]), a[2], int(a[3]), a[4], a[5] == "true")
elif mode == "supersede":
    supersede(sys.argv[2])
elif mode == "maint-fenced":
    maint_fenced(sys.argv[2], sys.argv[3])
PY
live() { SOCK=$SOCK ADMIN=$ADMIN DISKFARM=$DISKFARM FARM=$FARM python3 "$T/live.py" "$@"; }
gen() { df --json device show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'; }

# (a) the maintenance device connected once before `version new`: its
# writes after it must land in the new version's layer.
nbdinfo --size "$(uri device/m1)" >/dev/null || fail "nbdinfo device/m1"
json version new g
jcheck "$T/j.json" 'd["version"] == 1'
qio device/m1 "write -P 0x77 0 64k" "flush"
json version seal g
qio vdisk/g@1 "read -P 0x77 0 64k"
pass "seal after an earlier session: vdisk/g@1 holds the maintenance writes"

# a live maintenance session bound to the old version is fenced by
# `version new`; the next session writes the new maintenance version
live maint-fenced m1 g || fail "maintenance session after version new"
live binding m1 "$(gen m1)" g 2 server-persistent true || fail "/v1/sessions m1"
qio device/m1 "write -P 0x88 64k 64k" "flush"
json version seal g
qio vdisk/g@2 "read -P 0x77 0 64k" "read -P 0x88 64k 64k"
pass "version new fences a live maintenance session; its successor seals into g@2"

# /v1/sessions: the binding of a device session and of a vdisk session
live binding d1 "$(gen d1)" g 0 server false || fail "/v1/sessions d1"
python3 - "$SOCK" "$ADMIN" <<'PY' || fail "/v1/sessions vdisk export"
import json, os, sys, urllib.request, nbd
h = nbd.NBD()
h.connect_uri("nbd+unix:///vdisk/g@1?socket=" + sys.argv[1])
s = [x for x in json.load(urllib.request.urlopen(urllib.request.Request("http://%s/v1/sessions" % sys.argv[2], headers={"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]})))
     if x["export"] == "vdisk/g@1"]
assert len(s) == 1, s
want = {"device": None, "generation": None, "vdisk": "g", "version": 1,
        "cache": None, "maintenance": False}
assert {k: s[0].get(k) for k in want} == want, s
PY
pass "/v1/sessions: device, generation, vdisk, version, cache, maintenance"

# (b) device reset: FLUSH refused, sessions closed, a clean cache after
live fenced d1 device reset d1 || fail "device reset did not fence d1"
live clean d1 || fail "d1 after reset"
grep -q "device d1 generation .*sessions fenced: device d1 started boot generation" \
  "$T/streamsvc.log" || fail "no fence log line for d1"
grep -q "nbd unix: session open: export device/d1 device d1 generation [0-9]* vdisk g version 0 cache server" \
  "$T/streamsvc.log" || fail "no session open log line"
grep -q "nbd unix: session closed: export device/d1 .*(fenced: device d1 started boot generation" \
  "$T/streamsvc.log" || fail "no session close log line naming the fence"
pass "device reset: live sessions fenced and closed, next session clean"

# (c) device set --cache and device remove
# (--force: the console finds this streamsvc by its admin socket and sees
# the session; the server fences it)
live fenced-idle d2 device set d2 --cache ram:64 --force || fail "set --cache did not fence d2"
live clean d2 || fail "d2 after set --cache"
live binding d2 "$(gen d2)" g 0 ram:64 false || fail "/v1/sessions d2"
pass "device set --cache: live sessions fenced, next session in ram:64"
live fenced-idle d3 device remove d3 --force || fail "device remove did not fence d3"
out=$(nbdinfo --size "$(uri device/d3)" 2>&1) && fail "removed device d3 opened"
grep -q "nbd unix: refused export 'device/d3'" "$T/streamsvc.log" ||
  fail "refused open not logged"
pass "device remove: live sessions fenced, open refused ($(echo "$out" | head -n 1))"

# (d) supersede: a newer boot generation of a server-persistent device
live supersede p1 || fail "supersede p1"
qio device/p1 "read -P 0x5a 3M 64k" "read -P 0x6b 4M 64k" "read -P 0x7c 5M 4k"
pass "server-persistent: a new generation takes over a live session, nothing lost"
