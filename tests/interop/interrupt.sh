#!/bin/bash
# interrupt: Ctrl-C (SIGINT) or SIGTERM during `vdisk import`, `vdisk
# export` and `version merge` removes the partial output at once (nothing
# in the store, nothing next to the export), exits 130/143 with one line,
# and the next command succeeds.  A kill -9 leaves temp files that the next
# command of the same kind sweeps.  Progress bars (on a terminal) show an
# ETA.  Disk use: a 512 MiB image (patterned, not sparse, so each copy
# takes a while) plus at most two copies of it.
. "$(dirname "$0")/lib.sh"
need python3 qemu-img

MiB=$((1024 * 1024))
SIZE_MIB=512

# wait_for GLOB-DIR NAME-PATTERN MIN-BYTES: until a file matching appears
# with at least MIN-BYTES (5 s at most).
wait_for() {
  local dir=$1 pat=$2 min=$3 f
  for _ in $(seq 500); do
    f=$(find "$dir" -name "$pat" -size +"$((min / 1024))"k 2>/dev/null | head -1)
    [ -n "$f" ] && return 0
    sleep 0.01
  done
  fail "no temp file $pat of $min bytes appeared in $dir"
}

# interrupted SIG RC LABEL: the background command $bg died by SIG with
# exit status RC and said so in one line.
interrupted() {
  local sig=$1 want=$2 label=$3 rc=0
  kill "-$sig" "$bg"
  wait "$bg" || rc=$?
  [ "$rc" -eq "$want" ] || fail "$label: exit status $rc after SIG$sig, expected $want ($(cat "$T/err"))"
  [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$label: stderr is not one line: $(cat "$T/err")"
  grep -q "^diskfarm: interrupted by SIG$sig; the partial output was removed$" "$T/err" ||
    fail "$label: message: $(cat "$T/err")"
}

# no_temps LABEL: no temp file of ours anywhere in the store or in $T/out.
no_temps() {
  local left
  left=$(find "$FARM/store" "$T/out" \( -name '.import-*' -o -name '*.tmp' -o -name '*.tmp.*' -o -name '*.import.*' \) 2>/dev/null)
  [ -z "$left" ] || fail "$1: temp files left: $left"
}

# The command runs in the background with job control on, so SIGINT is
# not ignored in it (as it is for "cmd &" in a script), and $! is its pid.
set -m
bgdf() { "$DISKFARM" --farm "$FARM" "$@" & bg=$!; }

df init >/dev/null
mkdir "$T/out"
yes diskfarm-interrupt-test | head -c $((SIZE_MIB * MiB)) >"$T/src.raw"
before=$(df --json vdisk list)

# ---- import ---------------------------------------------------------------
for sig in INT TERM; do
  bgdf vdisk import big "$T/src.raw" >/dev/null 2>"$T/err"
  wait_for "$FARM/store" 'big.0.qcow2.tmp.*' $((16 * MiB))
  rc=$([ $sig = INT ] && echo 130 || echo 143)
  interrupted $sig "$rc" "import"
  no_temps "import SIG$sig"
  [ ! -e "$FARM/store/big" ] || fail "import SIG$sig left $(ls -A "$FARM/store/big")"
  [ "$(df --json vdisk list)" = "$before" ] || fail "import SIG$sig changed the vdisk list"
  pass "import: SIG$sig removes the partial import (rc $rc)"
done
# a foreign format: the signal reaches qemu-img convert too
qemu-img convert -q -f raw -O vhdx "$T/src.raw" "$T/src.vhdx"
bgdf vdisk import big "$T/src.vhdx" --format vhdx >/dev/null 2>"$T/err"
wait_for "$FARM/store" 'big.0.qcow2.import.*' $((4 * MiB))
interrupted TERM 143 "vhdx import"
no_temps "vhdx import SIGTERM"
[ ! -e "$FARM/store/big" ] || fail "vhdx import SIGTERM left $(ls -A "$FARM/store/big")"
rm -f "$T/src.vhdx"
pass "import vhdx: SIGTERM stops qemu-img convert and removes its output (rc 143)"
df vdisk import big "$T/src.raw" >/dev/null || fail "import after the interrupted ones"
qemu-img compare -q -f raw -F qcow2 "$T/src.raw" "$FARM/store/big/big.0.qcow2" || fail "imported image differs"
pass "import after an interrupted import"

# ---- export ----------------------------------------------------------------
cd "$T/out"
for fmt in raw:INT qcow2:TERM; do
  sig=${fmt#*:} fmt=${fmt%:*}
  bgdf vdisk export big "x.$fmt" --format "$fmt" >/dev/null 2>"$T/err"
  wait_for "$T/out" "x.$fmt.tmp.*" $((16 * MiB))
  rc=$([ $sig = INT ] && echo 130 || echo 143)
  interrupted $sig "$rc" "export $fmt"
  [ -z "$(ls -A "$T/out")" ] || fail "export $fmt SIG$sig left $(ls -A "$T/out")"
  df vdisk export big "x.$fmt" --format "$fmt" >/dev/null || fail "export $fmt after SIG$sig"
  qemu-img compare -q -f raw -F "$fmt" "$T/src.raw" "x.$fmt" || fail "export $fmt differs"
  rm -f "x.$fmt"
  pass "export $fmt: SIG$sig removes the temp file in the current directory (rc $rc)"
done
cd "$T"

# ---- merge ----------------------------------------------------------------
versions() { df --json version list big --admin 127.0.0.1:1; }
vbefore=$(versions)
for sig in INT TERM; do
  bgdf version merge big --base >/dev/null 2>"$T/err"
  wait_for "$FARM/store/big" '.big.1.qcow2.tmp' $((4 * MiB))
  rc=$([ $sig = INT ] && echo 130 || echo 143)
  interrupted $sig "$rc" "merge"
  no_temps "merge SIG$sig"
  [ "$(versions)" = "$vbefore" ] || fail "merge SIG$sig changed the version list"
  pass "merge: SIG$sig removes the .tmp in the store (rc $rc)"
done
df version merge big --base >/dev/null || fail "merge after the interrupted ones"
[ -f "$FARM/store/big/big.1.qcow2" ] || fail "merge made no big.1.qcow2"
no_temps "merge"
pass "merge after an interrupted merge"

# ---- a second signal does not wait ----------------------------------------
bgdf vdisk import twice "$T/src.raw" >/dev/null 2>"$T/err"
wait_for "$FARM/store" 'twice.0.qcow2.tmp.*' $((16 * MiB))
kill -INT "$bg"; kill -INT "$bg"
rc=0; wait "$bg" || rc=$?
[ "$rc" -eq 130 ] || fail "import after two SIGINTs: rc $rc ($(cat "$T/err"))"
no_temps "two SIGINTs"
[ ! -e "$FARM/store/twice" ] || fail "two SIGINTs left $FARM/store/twice"
pass "import: two SIGINTs in a row leave nothing ($(head -1 "$T/err"))"

# ---- kill -9: the next command of the same kind sweeps --------------------
bgdf vdisk import dead "$T/src.raw" >/dev/null 2>&1
wait_for "$FARM/store" 'dead.0.qcow2.tmp.*' $((16 * MiB))
kill -KILL "$bg"; wait "$bg" 2>/dev/null || true
[ -n "$(find "$FARM/store/dead" -name '.import-*')" ] || fail "kill -9 left no import directory (test is wrong)"
df vdisk import other "$T/src.raw" >/dev/null || fail "import after kill -9"
[ -z "$(find "$FARM/store" -name '.import-*')" ] || fail "stale import directory not swept"
pass "import: a killed import's temp directory is swept by the next import (any name)"

cd "$T/out"
bgdf vdisk export big y.raw --format raw >/dev/null 2>&1
wait_for "$T/out" 'y.raw.tmp.*' $((16 * MiB))
kill -KILL "$bg"; wait "$bg" 2>/dev/null || true
[ -n "$(ls -A "$T/out")" ] || fail "kill -9 left no export temp file (test is wrong)"
df vdisk export big y.raw --format raw >/dev/null || fail "export after kill -9"
[ "$(ls -A "$T/out")" = y.raw ] || fail "stale export temp not swept: $(ls -A "$T/out")"
rm -f y.raw
cd "$T"
pass "export: a killed export's temp file is swept by the next export of that file"

# ---- progress bars show an ETA ----------------------------------------------
if command -v script >/dev/null; then
  for cmd in "vdisk import eta $T/src.raw" "vdisk export big $T/out/e.raw --format raw" \
             "version merge big --base"; do
    script -qec "$DISKFARM --farm $FARM $cmd" /dev/null >"$T/tty" </dev/null ||
      fail "$cmd on a terminal failed: $(cat "$T/tty")"
    grep -aq 'ETA [0-9]*:[0-5][0-9]' "$T/tty" || fail "$cmd: no ETA in the progress bar: $(tr '\r' '\n' <"$T/tty" | tail -3)"
  done
  rm -f "$T/out/e.raw"
  pass "import, export and merge progress bars show an ETA"
fi
