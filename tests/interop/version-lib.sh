# Helpers shared by the version-*.sh tests (sourced after lib.sh).

# state VDISK N: the state of version N from `version list --json`.
vstate() {
  df --json version list "$1" --admin 127.0.0.1:1 | python3 -c "
import json,sys
for v in json.load(sys.stdin):
    if v['version'] == $2: print(v['state'])"
}

# Every file a version row names passes qemu-img check, and verify agrees.
check_store() { # vdisk
  local f
  for f in "$FARM/store/$1/$1".*.qcow2; do
    [ -e "$f" ] || continue
    qemu-img check -q "$f" || fail "qemu-img check $f"
  done
  df vdisk verify "$1" >/dev/null || fail "vdisk verify $1"
}

# qio EXPORT CMD...: qemu-io on an export over NBD (must succeed).
qio() {
  local e=$1; shift
  local args=()
  case $e in vdisk/*) args+=(-r) ;; esac
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f raw "${args[@]}" "$(uri "$e")" >"$T/qio.out" 2>&1 ||
    { cat "$T/qio.out"; fail "qemu-io $e $*"; }
  ! grep -q "Pattern verification failed\|failed" "$T/qio.out" ||
    { cat "$T/qio.out"; fail "qemu-io $e $*"; }
}
