#!/bin/bash
# e2e: the Debian packages install and run.  Builds diskfarm-server and
# diskfarm with dpkg-buildpackage (-us -uc -b, nocheck) in a copy of the
# tree, checks them with lintian (no error), installs them with dpkg into
# a fresh Debian 12 chroot made by mmdebstrap from Debian's archive (the
# machine's own apt sources), then inside it: `diskfarm init`, a vdisk
# import, and streamsvc started from the ExecStart= line of the installed
# unit (no systemd: User=/RuntimeDirectory= emulated, the daemon drops
# to diskfarm itself), in a network namespace of its own; nbdinfo reads the
# export from outside over the unit's UNIX socket.
#
# The chroot tarball (base + runtime dependencies + libnbd-bin) is cached
# in /var/cache/diskfarm-test/, keyed by date and package list.
# Skips (77) unless root, or when mmdebstrap/debhelper cannot be installed.
set -eu
. "$(dirname "$0")/lib/e2e.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
START=$(date +%s)
[ "$(id -u)" = 0 ] || e2e_skip "needs root (chroot, network namespace)"
e2e_need nbdinfo unshare chroot
if ! command -v mmdebstrap >/dev/null || ! command -v dh >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    mmdebstrap debhelper lintian >/dev/null 2>&1 || e2e_skip "cannot install mmdebstrap/debhelper"
fi
e2e_init
T=$E2E_TMP
step() { echo "[$(($(date +%s) - START)) s] $*"; }

# ---- build ------------------------------------------------------------------
mkdir "$T/src"
tar -C "$SRC" --exclude=./build --exclude='./build-*' --exclude=./.git -cf - . |
  tar -C "$T/src" -xf -
step "dpkg-buildpackage"
(cd "$T/src" && DEB_BUILD_OPTIONS=nocheck timeout 1500 dpkg-buildpackage -us -uc -b) \
  >"$T/build.log" 2>&1 || { tail -40 "$T/build.log"; e2e_fail "dpkg-buildpackage failed"; }
SERVER_DEB=$(ls "$T"/diskfarm-server_*.deb) CLI_DEB=$(ls "$T"/diskfarm_*.deb)
e2e_pass "dpkg-buildpackage: $(basename "$SERVER_DEB") $(basename "$CLI_DEB")"
dpkg-deb -c "$SERVER_DEB" >"$T/server.list"
dpkg-deb -c "$CLI_DEB" >"$T/cli.list"
for f in usr/sbin/streamsvc usr/sbin/bootstrapsvc usr/lib/systemd/system/streamsvc.service \
         etc/diskfarm/diskfarm.conf; do
  grep -q " ./$f$" "$T/server.list" || e2e_fail "diskfarm-server lacks /$f"
done
for f in usr/bin/diskfarm usr/bin/bdm usr/bin/isobuild etc/libvirt/hooks/qemu.d/diskfarm \
         usr/share/bash-completion/completions/diskfarm usr/share/man/man1/diskfarm.1.gz; do
  grep -q " ./$f$" "$T/cli.list" || e2e_fail "diskfarm lacks /$f"
done
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 "$T"/*.changes >"$T/lintian.log" 2>&1 || true
  cat "$T/lintian.log"
  ! grep -q '^E: ' "$T/lintian.log" || e2e_fail "lintian reports errors"
  e2e_pass "lintian: no error ($(grep -c '^W: ' "$T/lintian.log" || true) warnings)"
fi

# ---- a Debian 12 chroot with the runtime dependencies (cached) ----------------
# Runtime dependencies of both packages, without versions or alternatives.
deps=$( { dpkg-deb -f "$SERVER_DEB" Depends; echo ,; dpkg-deb -f "$CLI_DEB" Depends; } |
  tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' | grep -v '^$' | sort -u | paste -sd, -)
deps="$deps,libnbd-bin"
CACHE=/var/cache/diskfarm-test
mkdir -p "$CACHE"
key=$(date +%Y%m%d)-$(echo "$deps" | sha256sum | cut -c1-12)
TARBALL=$CACHE/bookworm-$key.tar
# The machine's own sources (deb822 .sources or one-line .list), as one-line entries.
sources() {
  cat /etc/apt/sources.list 2>/dev/null | grep '^deb ' || true
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/ { u = $2 } /^Suites:/ { $1 = ""; s = $0 } /^Components:/ { $1 = ""; c = $0 }
         /^$/ { if (u != "") for (i = split(s, a, " "); i > 0; i--) print "deb " u " " a[i] c; u = "" }
         END { if (u != "") for (i = split(s, a, " "); i > 0; i--) print "deb " u " " a[i] c }' "$f"
  done
  cat /etc/apt/sources.list.d/*.list 2>/dev/null | grep '^deb ' || true
}
if [ ! -s "$TARBALL" ]; then
  rm -f "$CACHE"/bookworm-*.tar            # yesterday's
  sources >"$T/sources.list"
  [ -s "$T/sources.list" ] || e2e_skip "no apt sources on this machine"
  step "mmdebstrap bookworm (--variant=apt, $deps)"
  part=$CACHE/.part-$key.tar               # mmdebstrap picks the format from .tar
  timeout 1200 mmdebstrap --variant=apt --include="$deps" bookworm "$part" - \
    <"$T/sources.list" >"$T/mmdebstrap.log" 2>&1 ||
    { tail -20 "$T/mmdebstrap.log"; rm -f "$part"; e2e_skip "mmdebstrap failed (archive unreachable?)"; }
  mv "$part" "$TARBALL"
fi
R=$T/root
mkdir "$R"
tar -C "$R" -xf "$TARBALL"
step "chroot from $(basename "$TARBALL")"

# ---- install ----------------------------------------------------------------
cp "$SERVER_DEB" "$CLI_DEB" "$R/tmp/"
# Everything in the chroot runs in its own mount and network namespaces:
# /proc for the tools, ports bound by streamsvc's config stay private.
in_root() { unshare -m -n --propagation private sh -c \
  'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$R" "$@"; }
in_root dpkg -i /tmp/"$(basename "$SERVER_DEB")" /tmp/"$(basename "$CLI_DEB")" >"$T/dpkg.log" 2>&1 ||
  { cat "$T/dpkg.log"; e2e_fail "dpkg -i failed in the chroot"; }
in_root getent passwd diskfarm >/dev/null || e2e_fail "postinst did not create the diskfarm user"
[ "$(in_root stat -c '%U:%G %a' /var/lib/diskfarm)" = "diskfarm:diskfarm 2750" ] ||
  e2e_fail "postinst: /var/lib/diskfarm is $(in_root stat -c '%U:%G %a' /var/lib/diskfarm)"
[ -f "$R/etc/libvirt/hooks/qemu.d/diskfarm" ] || e2e_fail "libvirt hook not in /etc/libvirt/hooks/qemu.d"
[ -f "$R/etc/diskfarm/diskfarm.conf" ] || e2e_fail "no /etc/diskfarm/diskfarm.conf"
e2e_pass "dpkg -i in a fresh Debian 12 chroot: diskfarm user, /var/lib/diskfarm 2750, config in /etc"

# ---- run: diskfarm init, streamsvc from the unit's ExecStart ----------------------
in_root diskfarm init >/dev/null || e2e_fail "diskfarm init in the chroot"
truncate -s 16M "$R/tmp/golden.raw"
printf 'DEB-INSTALL-MARK' | dd of="$R/tmp/golden.raw" bs=1 seek=4096 conv=notrunc status=none
in_root diskfarm vdisk import golden /tmp/golden.raw >/dev/null || e2e_fail "vdisk import in the chroot"
UNIT=$R/usr/lib/systemd/system/streamsvc.service
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
run_dir=$(sed -n 's/^RuntimeDirectory=//p' "$UNIT")
user=$(sed -n 's/^User=//p' "$UNIT")
[ -n "$exec_start" ] && [ -n "$run_dir" ] && [ "$user" = diskfarm ] || e2e_fail "unit lacks ExecStart/RuntimeDirectory/User"
echo "ExecStart: $exec_start"
# what systemd would make: RuntimeDirectory=, owned by User=, 0750
install -d -m 0750 "$R/run/$run_dir"
in_root chown "$user:$user" "/run/$run_dir"
# shellcheck disable=SC2086
unshare -m -n --propagation private sh -c \
  'mount -t proc proc "$0/proc" && ip link set lo up 2>/dev/null; exec chroot "$0" "$@"' \
  "$R" $exec_start >"$T/streamsvc.log" 2>&1 &
SS_PID=$!
E2E_PIDS="$E2E_PIDS $SS_PID"
SOCK=$R/run/$run_dir/nbd.sock
for _ in $(seq 100); do [ -S "$SOCK" ] && grep -q 'running as' "$T/streamsvc.log" && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$T/streamsvc.log"; e2e_fail "streamsvc from ExecStart did not listen on /run/$run_dir/nbd.sock"; }
grep -q 'running as diskfarm' "$T/streamsvc.log" || { cat "$T/streamsvc.log"; e2e_fail "streamsvc did not drop to diskfarm"; }
size=$(nbdinfo --size "nbd+unix:///vdisk/golden?socket=$SOCK") || e2e_fail "nbdinfo over $SOCK"
[ "$size" = 16777216 ] || e2e_fail "vdisk/golden size $size"
nbdinfo --can read "nbd+unix:///vdisk/golden?socket=$SOCK" || e2e_fail "export not readable"
PATH=/usr/bin:/bin:$PATH nbdsh -u "nbd+unix:///vdisk/golden?socket=$SOCK" \
  -c 'assert h.pread(16, 4096) == b"DEB-INSTALL-MARK"' ||
  e2e_fail "reading the export's data"
st=$(grep -E '^(Uid|Gid|CapPrm|CapEff):' "/proc/$SS_PID/status" | tr -s '\t' ' ' | paste -sd ';')
echo "streamsvc in the chroot: $st"
grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$SS_PID/status" || e2e_fail "streamsvc holds capabilities"
kill -TERM "$SS_PID"; wait "$SS_PID" || e2e_fail "streamsvc did not exit 0 on SIGTERM"
E2E_PIDS=""
[ ! -e "$SOCK" ] || e2e_fail "streamsvc left /run/$run_dir/nbd.sock behind"
e2e_pass "in the chroot: diskfarm init, vdisk import, streamsvc from the unit's ExecStart as diskfarm; nbdinfo read vdisk/golden ($(($(date +%s) - START)) s in all)"
