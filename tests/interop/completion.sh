#!/bin/bash
# dist/bash-completion: what each completion offers is what the program's
# --help lists (groups, subcommands, options), checked against the built
# binaries.
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
: "${DISKFARM:?}" "${BDM:?}" "${ISOBUILD:?}"
D=$TESTS_SRCDIR/../../dist/bash-completion
# comp FILE WORD...: complete the last word; prints the candidates
comp() {
  local file=$1; shift
  ( . "$D/$file"
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
    "_$file"; printf '%s\n' "${COMPREPLY[@]}" )
}
has() { grep -qx -- "$2" <<<"$1" || fail "${3}: '$2' not offered: $(echo $1)"; }
out=$(comp diskfarm "$DISKFARM" "")
for g in init vdisk device collection version server bootstrap farm vm audit; do has "$out" "$g" "groups"; done
out=$(comp diskfarm "$DISKFARM" vdisk "")
for s in import list show export remove verify inspect set; do has "$out" "$s" "vdisk subcommands"; done
[ "$(comp diskfarm "$DISKFARM" device re)" = "$(printf 'remove\nreset')" ] || fail "device re<TAB>"
out=$(comp diskfarm "$DISKFARM" --farm /tmp device add pc01 --)
for o in --mac --vdisk --cache --type --collection --quota --nbd-psk --farm --json; do has "$out" "$o" "device add options"; done
grep -qx -- --no-such <<<"$out" && fail "invented option"
out=$(comp diskfarm "$DISKFARM" farm "")
for s in set show admin-token; do has "$out" "$s" "farm subcommands"; done
out=$(comp diskfarm "$DISKFARM" device set pc01 --i)
has "$out" --iscsi-initiator "device set options"
out=$(comp diskfarm "$DISKFARM" store "")
for s in status sync; do has "$out" "$s" "store subcommands"; done
out=$(comp diskfarm "$DISKFARM" store sync --)
for o in --from --vdisk --bwlimit --server --json; do has "$out" "$o" "store sync options"; done
out=$(comp diskfarm "$DISKFARM" "")
has "$out" store "groups"
out=$(comp bdm "$BDM" "")
for c in iso partition inject script; do has "$out" "$c" "bdm commands"; done
out=$(comp bdm "$BDM" iso x.iso --s)
has "$out" --server "bdm options"; has "$out" --syslinux-dir "bdm options"
out=$(comp isobuild "$ISOBUILD" --)
for o in --output --volume-id --bios-boot --epoch; do has "$out" "$o" "isobuild options"; done
echo "ok: completion of diskfarm, bdm and isobuild matches their --help"
