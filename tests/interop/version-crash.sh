#!/bin/bash
# version-crash: kill -9 (DISKFARM_TEST_CRASH_AT, a test hook that makes the
# command SIGKILL itself at a named step) during seal, merge and promote.
# After each crash the farm is consistent (every published file passes
# qemu-img check and its SHA-256, nothing half-made is visible) and the
# command succeeds when run again, with the right content.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/version-lib.sh"
need qemu-img qemu-io python3

init_vdisk vd 32
df device add mnt --mac 52:54:00:00:00:03 --vdisk vd --type maintenance >/dev/null
start_streamsvc

# crashed STEP CMD...: the command dies by SIGKILL at STEP.
crashed() {
  local step=$1 rc=0; shift
  ( DISKFARM_TEST_CRASH_AT=$step exec "$DISKFARM" --farm "$FARM" "$@" ) >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || fail "$* did not die at $step (rc $rc)"
}

pat=16
for step in seal-written seal-renamed seal-in-tx seal-committed; do
  df version new vd >/dev/null
  n=$(df --json version list vd --admin 127.0.0.1:1 | python3 -c 'import json,sys; print(max(v["version"] for v in json.load(sys.stdin)))')
  pat=$((pat + 1))
  qio device/mnt "write -P $pat 2M 64k" "write -P $pat 6M 4k" "flush"
  crashed "$step" version seal vd
  check_store vd
  st=$(vstate vd "$n")
  case $step in
    seal-committed) [ "$st" = test ] || fail "$step: state $st" ;;
    *) [ "$st" = maintenance ] || fail "$step: state $st" ;;
  esac
  # the maintenance data survives a crash before the commit
  if [ "$st" = maintenance ]; then
    qio device/mnt "read -P $pat 2M 64k"
    df version seal vd >/dev/null || fail "seal after $step"
  else
    df version seal vd 2>/dev/null && fail "second seal after $step"
    df version list vd >/dev/null   # cleans up the left .maint
  fi
  test -d "$FARM/store/vd/vd.$n.maint" && fail "$step: .maint left"
  [ "$(vstate vd "$n")" = test ] || fail "$step: not sealed"
  qio "vdisk/vd@$n" "read -P $pat 2M 64k" "read -P $pat 6M 4k"
  check_store vd
  pass "seal killed at $step"
done

for step in merge-written merge-renamed merge-in-tx merge-committed; do
  before=$(df --json version list vd | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  crashed "$step" version merge vd --base
  after=$(df --json version list vd | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  want=$before; [ "$step" = merge-committed ] && want=$((before + 1))
  [ "$after" -eq "$want" ] || fail "$step: $after versions, want $want"
  check_store vd
  json version merge vd --base
  n=$(python3 -c 'import json; print(json.load(open("'"$T/j.json"'"))["version"])')
  ls "$FARM/store/vd" | grep -q tmp && fail "$step: temporary file left"
  # every merge since version 4 (the last seal) has its content
  qemu-img compare -q "$FARM/store/vd/vd.4.qcow2" "$FARM/store/vd/vd.$n.qcow2" ||
    fail "$step: merged base content"
  check_store vd
  pass "merge killed at $step"
done

for step in promote-begin promote-in-tx promote-committed; do
  df version promote vd 1 --to test >/dev/null
  crashed "$step" version promote vd 1 --to production
  st=$(vstate vd 1)
  case $step in
    promote-committed) [ "$st" = production ] || fail "$step: state $st" ;;
    *) [ "$st" = test ] || fail "$step: state $st" ;;
  esac
  df version promote vd 1 --to production >/dev/null || fail "promote after $step"
  [ "$(vstate vd 1)" = production ] || fail "$step: not promoted"
  pass "promote killed at $step"
done
