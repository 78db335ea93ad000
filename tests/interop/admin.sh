#!/bin/bash
# Admin HTTP: /v1/health, /v1/sessions, /metrics with curl.
. "$TESTS_SRCDIR/lib.sh"
need curl nbdsh python3

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk golden >/dev/null
start_streamsvc

uuid=$(df --json farm show | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
curl -sf "http://$ADMIN/v1/health" | python3 -c '
import json, sys; d = json.load(sys.stdin); assert d["status"] == "ok", d
assert d["farm"] == sys.argv[1], (d, sys.argv[1])' "$uuid" || fail "/v1/health farm"
# hold a session open while we look at it
nbdsh -u "$(uri device/pc01)" -c '
import json, os, subprocess, urllib.request
h.pwrite(b"x" * 8192, 0)
h.pread(4096, 0)
s = json.load(urllib.request.urlopen(urllib.request.Request("http://'"$ADMIN"'/v1/sessions", headers={"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]})))
mine = [x for x in s if x.get("device") == "pc01"]
assert mine, s
assert mine[0]["export"] == "device/pc01", mine
assert mine[0]["bytes_written"] >= 8192 and mine[0]["bytes_read"] >= 4096, mine
assert mine[0]["cache_bytes"] >= 8192, mine
' || fail "/v1/sessions"
curl -sf "http://$ADMIN/metrics" >"$T/m"
grep -q '^# TYPE diskfarm_ops_total counter' "$T/m" || fail "ops metric"
grep -q 'diskfarm_request_duration_seconds_bucket{export="device/pc01",le="+Inf"}' "$T/m" || fail "histogram"
grep -q '^diskfarm_cache_bytes{device="pc01"' "$T/m" || fail "cache bytes"
code=$(admin_curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/nope")
[ "$code" = 404 ] || fail "unknown path gave $code"
pass "admin HTTP"
