#!/bin/bash
# A farm of three stream servers: the registry, the store state, store
# sync and placement.  Each streamsvc has its own farm directory (its own
# store and caches); they share one farm DB file (farm2/farm.db and
# farm3/farm.db are symlinks to farm/farm.db), as PostgreSQL will share one
# DB between hosts.
#   - registration + heartbeat; kill -9 -> unhealthy within the timeout
#     (the time is measured and printed);
#   - store sync ss1 -> ss2 (throughput printed), --bwlimit honoured, an
#     interrupted sync resumed from its partial file;
#   - a corrupt copy: vdisk verify records it, store status says corrupt,
#     the server refuses to serve it and a sync repairs it;
#   - version list: store pending until every healthy server holds it;
#   - boot scripts: registry-healthy holders only, least loaded first,
#     weighted by power.
. "$TESTS_SRCDIR/lib.sh"
. "$TESTS_SRCDIR/bootstrap-lib.sh"
need qemu-img nbdinfo nbdsh curl python3 sqlite3

HB=200       # heartbeat interval, ms
TIMEOUT=600  # unhealthy after, ms

df init >/dev/null
for f in farm2 farm3; do
  "$DISKFARM" --farm "$T/$f" init >/dev/null
  rm -f "$T/$f"/farm.db*
  ln -s ../farm/farm.db "$T/$f/farm.db"
done

# vDisks: small (1 MiB), big (48 MiB of random data), res (24 MiB)
qemu-img create -q -f raw "$T/small.raw" 1M
df vdisk import small "$T/small.raw" --format raw >/dev/null
for v in big:48 res:24; do
  n=${v%%:*} mb=${v##*:}
  head -c $((mb * 1048576)) /dev/urandom >"$T/$n.raw"
  truncate -s 64M "$T/$n.raw"
  df vdisk import "$n" "$T/$n.raw" --format raw >/dev/null
done

# start_ss NAME FARMDIR POWER: streamsvc registering as NAME.  Sets
# PID_<NAME>, ADMIN_<NAME>, SOCK_<NAME>.
start_ss() {
  local name=$1 farm=$2 power=$3 log=$T/$1.log sock=$2/run/nbd.sock
  "$STREAMSVC" --farm "$farm" --nbd-listen "unix:$sock" \
    --iscsi-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --server-name "$name" --server-address 127.0.0.1 --power "$power" \
    --heartbeat-interval $HB --heartbeat-timeout $TIMEOUT >"$log" 2>&1 &
  local pid=$!
  _df_pids="$_df_pids $pid"
  wait_registered "$name" "$pid" "$log"
  eval "PID_$name=$pid SOCK_$name=$sock"
  eval "ADMIN_$name=$(grep -o 'admin listening on http://[0-9.:]*' "$log" | sed 's|.*:||')"
}
# wait_verified NAME: its start-up verification is done
wait_verified() {
  for _ in $(seq 100); do
    grep -q "present version files verified" "$T/$1.log" && return 0
    sleep 0.1
  done
  cat "$T/$1.log"; fail "$1 did not verify its store"
}

# `server add` keeps working: the registration fills the admin's row.
df server add ss1 --address 10.9.9.9 --power 1 >/dev/null
json server list --no-health
jcheck "$T/j.json" 'd[0]["state"] == "never-seen"' 'd[0]["last_heartbeat"] == "-"'
pass "a row server add made is never-seen"

start_ss ss1 "$FARM" 1
start_ss ss2 "$T/farm2" 4
start_ss ss3 "$T/farm3" 1
for s in ss1 ss2 ss3; do wait_verified $s; done

# the counts come with the next heartbeat after the verification
for _ in $(seq 30); do
  json server list --no-health
  grep -q '"versions_verified" : 3' "$T/j.json" && break; sleep 0.1
done
jcheck "$T/j.json" 'sorted(s["name"] for s in d) == ["ss1", "ss2", "ss3"]' \
  'all(s["state"] == "healthy" and s["kind"] == "streamsvc" for s in d)' \
  'all(s["heartbeat_age_ms"] <= '$TIMEOUT' for s in d)' \
  'all(s["heartbeat_timeout_ms"] == '$TIMEOUT' for s in d)' \
  '[s["address"] for s in d if s["name"] == "ss1"] == ["127.0.0.1"]' \
  '[s["power"] for s in d if s["name"] == "ss2"] == [4]' \
  '[s["versions_verified"] for s in d if s["name"] == "ss1"] == [3]' \
  'all(s["free_bytes"] > 0 for s in d)'
df audit --action server.register | grep -q ss1 || fail "registration not audited"
pass "three servers registered and heartbeating; ss1's row refreshed"

# ---- store status before any sync ----------------------------------------
json store status
jcheck "$T/j.json" 'len(d) == 3' \
  'all(r["servers"]["ss1"]["state"] == "verified" for r in d)' \
  'all(r["servers"]["ss2"]["state"] == "missing" for r in d)'
LIBNBD_DEBUG=1 nbdinfo "nbd+unix:///vdisk/big?socket=$SOCK_ss2" >"$T/ni" 2>&1 && fail "ss2 served a version it lacks"
grep -q "server error message: .*copy of version 0 is missing" "$T/ni" || { cat "$T/ni"; fail "no 'missing' in the refusal"; }
json version list big
jcheck "$T/j.json" 'd[0]["store"] == "pending"'
pass "store status: ss2/ss3 missing; ss2 refuses; version list says pending"

# ---- sync ss2 <- ss1, throughput -------------------------------------------
"$DISKFARM" --farm "$T/farm2" --json store sync --server ss2 >"$T/j.json" \
  || { cat "$T/j.json"; fail "store sync ss2"; }
jcheck "$T/j.json" 'all(i["outcome"] == "copied" and i["from"] == "ss1" for i in d)'
python3 - "$T/j.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
b = sum(i["bytes"] for i in d); ms = max(sum(i["ms"] for i in d), 1)
print("figure: store sync throughput %.1f MiB/s (%d bytes in %d ms, HTTP loopback)"
      % (b / 1048576 / (ms / 1000), b, ms))
PY
cmp "$FARM/store/big/big.0.qcow2" "$T/farm2/store/big/big.0.qcow2" || fail "copy differs"
nbdinfo --size "nbd+unix:///vdisk/big?socket=$SOCK_ss2" >/dev/null || fail "ss2 refuses the synced copy"
json store status --vdisk big
jcheck "$T/j.json" 'd[0]["servers"]["ss2"]["state"] == "verified"'
"$DISKFARM" --farm "$T/farm2" --json store sync --server ss2 >"$T/j.json"
jcheck "$T/j.json" 'all(i["outcome"] == "present" and i["bytes"] == 0 for i in d)'
pass "store sync ss2 <- ss1: copied, identical, served; a second run copies nothing"

# ---- bwlimit ------------------------------------------------------------------
t0=$(date +%s%N)
"$DISKFARM" --farm "$T/farm3" --json store sync --server ss3 --vdisk res \
  --from ss2 --bwlimit 8M >"$T/j.json" || { cat "$T/j.json"; fail "bwlimit sync"; }
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
jcheck "$T/j.json" 'd[0]["outcome"] == "copied" and d[0]["from"] == "ss2"'
size=$(stat -c %s "$T/farm3/store/res/res.0.qcow2")
min=$(( size * 1000 / (8 * 1048576) * 9 / 10 ))
[ "$ms" -ge "$min" ] || fail "--bwlimit 8M: $size bytes in $ms ms (< $min ms)"
echo "figure: --bwlimit 8M: $size bytes in $ms ms ($(( size * 1000 / ms / 1024 )) KiB/s)"
pass "--bwlimit 8M honoured"

# ---- resume of an interrupted sync ---------------------------------------------
"$DISKFARM" --farm "$T/farm3" store sync --server ss3 --vdisk big \
  --bwlimit 8M >/dev/null 2>&1 &
spid=$!
part=$T/farm3/store/big/.big.0.qcow2.part
for _ in $(seq 100); do
  [ -f "$part" ] && [ "$(stat -c %s "$part")" -gt 4000000 ] && break
  sleep 0.05
done
kill -9 $spid; wait $spid 2>/dev/null || true
have=$(stat -c %s "$part")
full=$(stat -c %s "$FARM/store/big/big.0.qcow2")
[ "$have" -gt 0 ] && [ "$have" -lt "$full" ] || fail "partial copy $have of $full"
[ -e "$T/farm3/store/big/big.0.qcow2" ] && fail "an interrupted copy was published"
"$DISKFARM" --farm "$T/farm3" --json store sync --server ss3 --vdisk big \
  >"$T/j.json" || { cat "$T/j.json"; fail "resumed sync"; }
jcheck "$T/j.json" 'd[0]["outcome"] == "copied"' \
  "d[0]['resumed_at'] >= $have" "d[0]['bytes'] == $full - d[0]['resumed_at']"
cmp "$FARM/store/big/big.0.qcow2" "$T/farm3/store/big/big.0.qcow2" || fail "resumed copy differs"
[ -e "$part" ] && fail "partial file left"
pass "interrupted sync resumed at byte $have of $full, copy identical"

# a partial file of wrong bytes: the SHA-256 check discards it, nothing
# is published; the next run copies it whole
full=$(stat -c %s "$FARM/store/small/small.0.qcow2")
mkdir -p "$T/farm3/store/small"
head -c "$full" /dev/urandom >"$T/farm3/store/small/.small.0.qcow2.part"
"$DISKFARM" --farm "$T/farm3" --json store sync --server ss3 --vdisk small \
  >"$T/j.json" 2>"$T/err" && fail "a wrong copy was accepted"
jcheck "$T/j.json" 'd[0]["outcome"] == "failed"' '"SHA-256" in d[0]["error"]'
[ -e "$T/farm3/store/small/small.0.qcow2" ] && fail "a wrong copy was published"
[ -e "$T/farm3/store/small/.small.0.qcow2.part" ] && fail "a wrong partial copy was kept"
"$DISKFARM" --farm "$T/farm3" store sync --server ss3 --vdisk small >/dev/null \
  || fail "sync after a wrong partial copy"
json store status --vdisk small
jcheck "$T/j.json" 'd[0]["servers"]["ss3"]["state"] == "verified"'
pass "a partial copy of wrong bytes is discarded by the SHA-256 check, never published"

# ---- a corrupt copy ---------------------------------------------------------------
printf 'garbage!' | dd of="$T/farm3/store/big/big.0.qcow2" bs=1 seek=1000000 conv=notrunc status=none
"$DISKFARM" --farm "$T/farm3" vdisk verify big --server ss3 >"$T/out" 2>&1 \
  && fail "vdisk verify passed a corrupt copy"
json store status --vdisk big
jcheck "$T/j.json" 'd[0]["servers"]["ss3"]["state"] == "corrupt"' \
  'd[0]["servers"]["ss1"]["state"] == "verified"'
LIBNBD_DEBUG=1 nbdinfo "nbd+unix:///vdisk/big?socket=$SOCK_ss3" >"$T/ni" 2>&1 && fail "ss3 served its corrupt copy"
grep -q "server error message: .*copy of version 0 is corrupt" "$T/ni" || { cat "$T/ni"; fail "no 'corrupt' in the refusal"; }
TOKEN=$(df farm admin-token)
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_ss3/v1/store/big/0")
[ "$code" = 401 ] || fail "/v1/store answered without the admin token (HTTP $code)"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$ADMIN_ss3/v1/store/big/0")
[ "$code" = 409 ] || fail "ss3 handed its corrupt copy to a peer (HTTP $code)"
code=$(curl -s -o "$T/range" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  -r 100-199 "http://127.0.0.1:$ADMIN_ss1/v1/store/big/0")
[ "$code" = 206 ] && cmp "$T/range" <(tail -c +101 "$FARM/store/big/big.0.qcow2" | head -c 100) \
  || fail "a Range request on ss1's copy (HTTP $code)"
json version list big
jcheck "$T/j.json" 'd[0]["store"] == "pending"'
pass "corrupt copy: recorded, status says corrupt, ss3 refuses it (NBD and peers)"

# ---- placement in boot scripts ------------------------------------------------------
df device add pc01 --mac 52:54:00:00:00:01 --vdisk big >/dev/null
start_bootstrapsvc --server-name boot1
URL=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 50); do
  df --json server list --no-health >"$T/j.json"
  grep -q '"boot1"' "$T/j.json" && break; sleep 0.1
done
jcheck "$T/j.json" '[(s["kind"], s["state"], s["admin_port"]) for s in d if s["name"] == "boot1"] == [("bootstrapsvc", "healthy", '$HTTP_PORT')]'

port_of() {
  df --json server list --no-health | python3 -c 'import json, sys
print([s["iscsi_port"] for s in json.load(sys.stdin) if s["name"] == sys.argv[1]][0])' "$1"
}
P1=$(port_of ss1) P2=$(port_of ss2) P3=$(port_of ss3)
# order of the servers in the sanboot line, as names
order() {
  curl -sS "$URL/boot.ipxe?mac=52:54:00:00:00:01" -o "$T/script" || fail "boot.ipxe"
  grep -o 'iscsi:127.0.0.1::[0-9]*' "$T/script" | sed 's/.*:://' |
    sed "s/^$P1\$/ss1/; s/^$P2\$/ss2/; s/^$P3\$/ss3/" | tr '\n' ' '
}
wait_log "ss1 is now healthy" && wait_log "ss2 is now healthy" || { cat "$BS_LOG"; fail "bootstrap probes"; }
o=$(order)
[ "$o" = "ss1 ss2 " ] || { cat "$T/script"; fail "placement without load: '$o', want 'ss1 ss2 ' (ss3 corrupt)"; }
# one session on each: ss1 load 1/1, ss2 load 1/4 -> ss2 first
for s in ss1 ss2; do
  eval sock=\$SOCK_$s
  nbdsh -u "nbd+unix:///vdisk/small?socket=$sock" -c 'import time; time.sleep(30)' &
  _df_pids="$_df_pids $!"
done
for _ in $(seq 50); do
  o=$(order); [ "$o" = "ss2 ss1 " ] && break; sleep 0.2
done
[ "$o" = "ss2 ss1 " ] || { cat "$T/script"; fail "placement with load: '$o', want 'ss2 ss1 '"; }
grep -q "boot1\|:$HTTP_PORT:1:" "$T/script" && fail "a bootstrapsvc listed as a stream target"
pass "boot script: holders only (not corrupt ss3), least loaded by power first; boot1 (bootstrapsvc) registered, not a target"

# a device whose cache persists is booted from one server (iPXE's
# multipath sanboot would log in on every URI at once)
df device add pp01 --mac 52:54:00:00:00:21 --vdisk big --cache server-persistent >/dev/null
curl -sS "$URL/boot.ipxe?mac=52:54:00:00:00:21" -o "$T/script.pp"
n=$(grep -o 'iscsi:127.0.0.1::[0-9]*' "$T/script.pp" | wc -l)
[ "$n" = 1 ] || { cat "$T/script.pp"; fail "a server-persistent device's script names $n servers, not 1"; }
grep -q "iscsi:127.0.0.1::$P2:" "$T/script.pp" || { cat "$T/script.pp"; fail "not the least loaded server (ss2)"; }
pass "a server-persistent device's boot script names one server, the least loaded"

# ---- repair: sync over the corrupt copy ------------------------------------------------
"$DISKFARM" --farm "$T/farm3" --json store sync --server ss3 --vdisk big >"$T/j.json" \
  || { cat "$T/j.json"; fail "repair sync"; }
jcheck "$T/j.json" 'd[0]["outcome"] == "copied"'
nbdinfo --size "nbd+unix:///vdisk/big?socket=$SOCK_ss3" >/dev/null || fail "ss3 still refuses the repaired copy"
json version list big
jcheck "$T/j.json" 'd[0]["store"] == "ready"'
pass "store sync repaired the corrupt copy; version list says ready"

# ---- kill -9: unhealthy within the timeout ------------------------------------------------
t0=$(date +%s%N)
kill -9 $PID_ss2
ms=-1
for _ in $(seq 200); do
  df --json server list --no-health >"$T/j.json"
  if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if [s for s in d if s["name"]=="ss2" and s["state"]=="unhealthy"] else 1)' "$T/j.json"; then
    ms=$(( ($(date +%s%N) - t0) / 1000000 )); break
  fi
  sleep 0.05
done
[ "$ms" -ge 0 ] || fail "ss2 never went unhealthy"
[ "$ms" -le $((TIMEOUT + 2 * HB + 1000)) ] || fail "unhealthy after $ms ms (timeout $TIMEOUT ms)"
echo "figure: kill -9 -> registry unhealthy in $ms ms (heartbeat $HB ms, timeout $TIMEOUT ms)"
for _ in $(seq 50); do
  o=$(order); [ "$o" = "ss3 ss1 " ] && break; sleep 0.1
done
[ "$o" = "ss3 ss1 " ] || { cat "$T/script"; fail "after kill: '$o', want 'ss3 ss1 '"; }
pass "kill -9 ss2: unhealthy in $ms ms; boot scripts list ss1 and ss3 only"

# ---- the other layout: one store shared by two servers ---------------------
# farm4's store/ is ss1's store (a symlink stands for the NFS or CephFS
# mount every server sees): ss4 verifies the same files and holds every
# version without a copy; a sync has nothing to do.
"$DISKFARM" --farm "$T/farm4" init >/dev/null
rm -rf "$T/farm4/store" "$T"/farm4/farm.db*
ln -s ../farm/farm.db "$T/farm4/farm.db"
ln -s ../farm/store "$T/farm4/store"
start_ss ss4 "$T/farm4" 1
wait_verified ss4
json store status
jcheck "$T/j.json" 'len(d) == 3' \
  'all(r["servers"]["ss4"]["state"] == "verified" for r in d)' \
  'all(r["servers"]["ss1"]["state"] == "verified" for r in d)'
"$DISKFARM" --farm "$T/farm4" --json store sync --server ss4 >"$T/j.json" \
  || { cat "$T/j.json"; fail "store sync ss4"; }
jcheck "$T/j.json" 'all(i["outcome"] == "present" and i["bytes"] == 0 for i in d)'
nbdinfo --size "nbd+unix:///vdisk/big?socket=$SOCK_ss4" >/dev/null || fail "ss4 does not serve the shared store's big"
P4=$(port_of ss4)
for _ in $(seq 50); do
  o=$(order); case " $o" in *" $P4 "*) break ;; esac; sleep 0.1
done
case " $o" in *" $P4 "*) ;; *) cat "$T/script"; fail "ss4 (shared store, iSCSI port $P4) not in the boot script: '$o'" ;; esac
pass "shared store layout: ss4 on ss1's store holds every version verified, nothing to sync, serves and is a boot target"
