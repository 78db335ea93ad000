#!/bin/bash
# NBD TLS: streamsvc --tls against qemu (tls-creds-psk, tls-creds-x509),
# libnbd (nbdinfo, nbdsh: nbds:// and nbds+unix:// URIs, tls-psk-file)
# and a raw client (nbd-tls-client.py: the option replies of the spec's
# TLS rules).  A TLS identity (PSK identity or certificate CN) opens only
# its own device; the failures of qemu iotest 233's kind (wrong CA, wrong
# key, plaintext against require, TLS against off) each end with an error
# on both sides, and the server keeps serving the others.
. "$TESTS_SRCDIR/lib.sh"
need qemu-img qemu-io nbdinfo nbdsh openssl python3
CLIENT="$TESTS_SRCDIR/nbd-tls-client.py"

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
df device add pc01 --mac 52:54:00:00:00:01 --vdisk golden >/dev/null
# pc02's key lives in the farm: the line is printed once, on stdout
df device add pc02 --mac 52:54:00:00:00:02 --vdisk golden --nbd-psk generate \
  >"$T/pc02.out" 2>"$T/pc02.err"
grep -x 'pc02:[0-9a-f]\{64\}' "$T/pc02.out" >"$T/pc02.psk" || fail "no PSK line: $(cat "$T/pc02.out")"
grep -q 'not shown again' "$T/pc02.err" || fail "no once-only notice"
df device show pc02 | grep -q "$(cut -d: -f2 "$T/pc02.psk")" && fail "device show prints the key"
json device show pc02
jcheck "$T/j.json" "d['nbd_tls_key'] is True" "'nbd_psk' not in d"
json device show pc01
jcheck "$T/j.json" "d['nbd_tls_key'] is False"
grep -q "$(cut -d: -f2 "$T/pc02.psk")" "$T/streamsvc.log" 2>/dev/null && fail "key logged"
pass "device add --nbd-psk generate prints NAME:hexkey once"

# pc01's key comes from a file in nbdkit's format (streamsvc --tls-psk)
hexkey() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
echo "pc01:$(hexkey)" >"$T/keys.psk"
echo "pc01:$(hexkey)" >"$T/wrong.psk"      # right identity, wrong key
echo "nobody:$(hexkey)" >"$T/nobody.psk"   # an identity with no key
mkdir "$T/psk01" && cp "$T/keys.psk" "$T/psk01/keys.psk"   # qemu: dir/keys.psk
mkdir "$T/psk02" && cp "$T/pc02.psk" "$T/psk02/keys.psk"
mkdir "$T/pskwrong" && cp "$T/wrong.psk" "$T/pskwrong/keys.psk"

# x509 made here: a CA, the server's certificate (localhost, 127.0.0.1),
# a client certificate CN=pc01; a second CA that signs nothing we trust
pki=$T/pki
mkdir -p "$pki"/{ca,ca2,server,pc01,pc02,wrongca,badclient,anon}
ossl() { openssl "$@" 2>>"$T/openssl.log" >/dev/null || { cat "$T/openssl.log"; fail "openssl $1"; }; }
make_ca() { # dir CN
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1/ca-key.pem" -out "$1/ca-cert.pem" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
make_cert() { # ca-dir out-prefix CN extensions
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$2-key.pem" -out "$2.csr" -subj "/CN=$3"
  printf '%b' "$4" >"$2.ext"
  ossl x509 -req -in "$2.csr" -CA "$1/ca-cert.pem" -CAkey "$1/ca-key.pem" \
    -CAcreateserial -out "$2-cert.pem" -days 2 -extfile "$2.ext"
}
SERVER_EXT='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n'
CLIENT_EXT='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'
make_ca "$pki/ca" "diskfarm test CA"
make_ca "$pki/ca2" "another CA"
make_cert "$pki/ca" "$pki/server/server" localhost "$SERVER_EXT"
make_cert "$pki/ca" "$pki/pc01/client" pc01 "$CLIENT_EXT"
make_cert "$pki/ca" "$pki/pc02/client" pc02 "$CLIENT_EXT"
make_cert "$pki/ca2" "$pki/badclient/client" pc01 "$CLIENT_EXT"
cp "$pki/ca/ca-cert.pem" "$pki/server/"
for d in pc01 pc02 badclient anon; do cp "$pki/ca/ca-cert.pem" "$pki/$d/"; done
# a client of another CA (iotest 233's client3): it trusts ca2 only and
# holds a CN=pc01 certificate of ca2
cp "$pki/ca2/ca-cert.pem" "$pki/wrongca/"
make_cert "$pki/ca2" "$pki/wrongca/client" pc01 "$CLIENT_EXT"

start_streamsvc --tls=require --tls-certificates="$pki/server" \
  --tls-psk="$T/keys.psk" --nbd-listen 127.0.0.1:0
grep -q 'nbd TLS require (--tls): x509+psk' "$T/streamsvc.log" || fail "no TLS start-up line"
PORT=$(grep -o 'nbd listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | head -1 | sed 's/.*://')
[ -n "$PORT" ] || fail "no TCP port"
RSOCK=$SOCK
log_has() { grep -q -- "$1" "$T/streamsvc.log" || fail "server log lacks: $1"; }
alive() { kill -0 "$STREAMSVC_PID" 2>/dev/null || fail "streamsvc died"; }

# ---- PSK -------------------------------------------------------------------
psk_uri() { echo "nbds+unix://$1@/$2?socket=$RSOCK&tls-psk-file=$3"; }
nbdinfo "$(psk_uri pc01 vdisk/golden "$T/keys.psk")" | grep -q 'protocol: .* with TLS' ||
  fail "nbdinfo PSK vdisk"
nbdinfo --size "$(psk_uri pc01 device/pc01 "$T/keys.psk")" | grep -qx 16777216 || fail "PSK pc01 device/pc01"
nbdinfo --size "$(psk_uri pc01 device/52:54:00:00:00:01 "$T/keys.psk")" | grep -qx 16777216 ||
  fail "PSK pc01 device/<its MAC>"
pass "nbdinfo nbds+unix:// tls-psk-file: pc01 opens vdisk/, its name and its MAC"

# large reads of the chain, which a plain socket gets by sendfile, come
# copied through TLS
nbdcopy "$(psk_uri pc01 vdisk/golden "$T/keys.psk")" "$T/tlscopy.raw"
cmp "$T/disk.raw" "$T/tlscopy.raw" || fail "nbdcopy over TLS differs"
pass "nbdcopy of vdisk/golden over TLS (PSK)"

for e in device/pc02 device/52:54:00:00:00:02 device/nosuch; do
  if nbdinfo "$(psk_uri pc01 "$e" "$T/keys.psk")" >"$T/out" 2>&1; then fail "pc01 opened $e"; fi
  log_has "refused export '$e': export '$e' is not open to TLS identity 'pc01'"
done
pass "PSK identity pc01 cannot open pc02 (by name or MAC) nor probe names"

# the farm's key of pc02, through libnbd and qemu
URI=$(psk_uri pc02 device/pc02 "$T/pc02.psk") nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated()
h.pwrite(b"\xa5" * 4096, 8192)
h.flush()
assert h.pread(4096, 8192) == b"\xa5" * 4096
# requests and replies far larger than a TLS record and a socket buffer,
# several in flight: partial writes, buffered records, backpressure
big = os.urandom(4 << 20)
h.pwrite(big, 4 << 20)
bufs = [nbd.Buffer(1 << 20) for _ in range(4)]
cookies = [h.aio_pread(bufs[i], (4 << 20) + (i << 20)) for i in range(4)]
for c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
assert b"".join(b.to_bytearray() for b in bufs) == big
' || fail "nbdsh PSK pc02 write/read"
qemu-io --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/psk02,username=pc02" \
  --image-opts "driver=nbd,path=$RSOCK,export=device/pc02,tls-creds=tls0" \
  -c 'read -P 0xa5 8192 4096' -c 'write -P 0x3c 1M 64k' -c flush -c 'read -P 0x3c 1M 64k' \
  >"$T/qio" 2>&1 || { cat "$T/qio"; fail "qemu-io tls-creds-psk pc02"; }
grep -q 'read 65536/65536' "$T/qio" || fail "qemu-io read-back"
qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/psk01,username=pc01" \
  --image-opts "driver=nbd,path=$RSOCK,export=device/pc01,tls-creds=tls0" |
  grep -q 'virtual size: 16 MiB' || fail "qemu-img tls-creds-psk pc01"
pass "farm PSK (pc02) through nbdsh and qemu-io; file PSK (pc01) through qemu-img"

# ---- x509 ------------------------------------------------------------------
x509_qemu() { # clientdir export
  qemu-img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$1" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=$2,tls-creds=tls0"
}
x509_qemu "$pki/pc01" device/pc01 | grep -q 'virtual size: 16 MiB' || fail "qemu x509 CN=pc01"
if x509_qemu "$pki/pc01" device/pc02 >"$T/out" 2>&1; then fail "CN=pc01 opened device/pc02"; fi
log_has "not open to TLS identity 'pc01'"
nbdinfo --size "nbds://127.0.0.1:$PORT/device/pc02?tls-certificates=$pki/pc02" | grep -qx 16777216 ||
  fail "nbdinfo x509 CN=pc02"
pass "x509 client certificates: qemu tls-creds-x509 and nbdinfo nbds:// map CN to the device"

python3 "$CLIENT" require-plain "$RSOCK" >"$T/raw" || { cat "$T/raw"; fail "FORCEDTLS replies"; }
python3 "$CLIENT" tls "$RSOCK" "$pki/pc01" >"$T/raw" || { cat "$T/raw"; fail "TLS replies"; }
python3 "$CLIENT" anon "$RSOCK" "$pki/anon" >"$T/raw" || { cat "$T/raw"; fail "anonymous TLS"; }
pass "raw client: TLS_REQD before STARTTLS, POLICY alike for existing and unknown names"

# ---- failures (qemu iotest 233's kind): an error on both sides ----------------
failure() { # what expected-client-words expected-log-words command...
  local what=$1 cw=$2 lw=$3; shift 3
  local before; before=$(wc -l <"$T/streamsvc.log")
  if "$@" >"$T/fail.out" 2>&1; then fail "$what: the client succeeded"; fi
  grep -qiE "$cw" "$T/fail.out" || { cat "$T/fail.out"; fail "$what: client error lacks /$cw/"; }
  [ -z "${SHOW:-}" ] || cat "$T/fail.out"
  for _ in $(seq 20); do
    tail -n +"$((before + 1))" "$T/streamsvc.log" | grep -qE "$lw" && break; sleep 0.1
  done
  tail -n +"$((before + 1))" "$T/streamsvc.log" | grep -qE "$lw" ||
    { tail -5 "$T/streamsvc.log"; fail "$what: server log lacks /$lw/"; }
  alive
  pass "$what: client says /$cw/, server says /$lw/"
}
failure "plaintext against require (qemu)" "TLS" "TLS is required" \
  qemu-img info "nbd+unix:///device/pc01?socket=$RSOCK"
failure "plaintext against require (nbdinfo)" "opt_go|TLS|not supported" "TLS is required" \
  nbdinfo "nbd+unix:///vdisk/golden?socket=$RSOCK"
failure "wrong PSK key (qemu)" "TLS|handshake|decrypt|key" "TLS handshake failed" \
  qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/pskwrong,username=pc01" \
  --image-opts "driver=nbd,path=$RSOCK,export=device/pc01,tls-creds=tls0"
failure "unknown PSK identity (nbdinfo)" "gnutls|TLS|handshake" "PSK identity 'nobody' has no key" \
  nbdinfo "$(psk_uri nobody vdisk/golden "$T/nobody.psk")"
failure "client of another CA (qemu)" "certificate|issuer|CA|verif" \
  "TLS handshake failed|ended without opening an export" \
  x509_qemu "$pki/wrongca" vdisk/golden
# gnutls holds back a certificate the server's CA list does not name: no
# identity then, so no device
failure "client certificate of another CA (nbdinfo)" "opt_go|not supported|permitted" \
  "not open to TLS identity '\(none\)'" \
  nbdinfo "nbds://127.0.0.1:$PORT/device/pc01?tls-certificates=$pki/badclient"
# Python's ssl sends it anyway: the server refuses the handshake
failure "client certificate of another CA (raw)" "certificate|alert|SSL" \
  "TLS handshake failed: .*certificate verify failed" \
  python3 "$CLIENT" badcert "$RSOCK" "$pki/badclient"

# the server still serves everyone else
nbdinfo --size "$(psk_uri pc01 device/pc01 "$T/keys.psk")" | grep -qx 16777216 || fail "served after failures"
pass "still serving after every failure"

# ---- TLS against off; tls=on keeps plaintext and forgets it at STARTTLS ------
stop_streamsvc
start_streamsvc --tls=off
failure "TLS against off (qemu)" "TLS|STARTTLS|not configured|support" "STARTTLS refused: TLS is off" \
  qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/psk01,username=pc01" \
  --image-opts "driver=nbd,path=$SOCK,export=vdisk/golden,tls-creds=tls0"
failure "TLS against off (nbdinfo)" "TLS|STARTTLS|support|connection is closed" "STARTTLS refused: TLS is off" \
  nbdinfo "$(psk_uri pc01 vdisk/golden "$T/keys.psk")"
qemu-img info "nbd+unix:///vdisk/golden?socket=$SOCK" | grep -q 'virtual size: 16 MiB' || fail "plaintext with off"
stop_streamsvc

start_streamsvc --tls=on --tls-certificates="$pki/server" --tls-verify-peer
qemu-img info "nbd+unix:///device/pc01?socket=$SOCK" | grep -q 'virtual size: 16 MiB' || fail "plaintext with on"
failure "--tls-verify-peer: a TLS client without a certificate (nbdinfo)" "TLS|handshake|alert|certificate" \
  "TLS handshake failed: .*peer did not return a certificate" \
  nbdinfo "nbds+unix:///vdisk/golden?socket=$SOCK&tls-certificates=$pki/anon"
python3 "$CLIENT" discard "$SOCK" "$pki/pc01" >"$T/raw" || { cat "$T/raw"; fail "STARTTLS discard"; }
log_has "plaintext bytes after NBD_OPT_STARTTLS discarded"
pass "tls=on: plaintext served; after STARTTLS plaintext input and negotiated options are gone"
stop_streamsvc

# ---- the farm's setting, and what overrides it ---------------------------------
df farm set nbd-tls require >/dev/null
start_streamsvc
log_has "nbd TLS require (farm setting nbd-tls): psk"
failure "farm nbd-tls require: plaintext" "TLS" "TLS is required" \
  qemu-img info "nbd+unix:///vdisk/golden?socket=$SOCK"
nbdinfo --size "$(psk_uri pc02 device/pc02 "$T/pc02.psk")" | grep -qx 16777216 || fail "farm PSK under farm require"
stop_streamsvc
printf '%s\n[streamsvc]\ntls=off\n' "$DF_DB_CONF" >"$T/off.conf"
DISKFARM_CONFIG=$T/off.conf start_streamsvc
log_has "nbd TLS off\|listening"
qemu-img info "nbd+unix:///vdisk/golden?socket=$SOCK" | grep -q 'virtual size' || fail "diskfarm.conf tls=off did not win"
stop_streamsvc
pass "farm set nbd-tls require applies; diskfarm.conf tls=off wins over it"

# a removed key stops working at the next handshake
df device set pc02 --nbd-psk none >/dev/null
json device show pc02
jcheck "$T/j.json" "d['nbd_tls_key'] is False"
start_streamsvc --tls=require
failure "removed farm key" "TLS|handshake|gnutls" "PSK identity 'pc02' has no key" \
  nbdinfo "$(psk_uri pc02 vdisk/golden "$T/pc02.psk")"
stop_streamsvc

# bad input changes nothing and says why
for bad in "--tls=maybe" "--tls=require --tls-psk=$T/nosuch.psk" \
           "--tls=require --tls-certificates=$T/nosuch"; do
  # shellcheck disable=SC2086
  if "$STREAMSVC" --farm "$FARM" --nbd-listen "unix:$T/bad.sock" --admin-listen none $bad \
      >"$T/bad.out" 2>&1; then fail "streamsvc $bad started"; fi
  [ "$(wc -l <"$T/bad.out")" -le 2 ] || { cat "$T/bad.out"; fail "$bad: not a short error"; }
done
echo "pc01:abcd" >"$T/short.psk"
if "$STREAMSVC" --farm "$FARM" --admin-listen none --tls=on --tls-psk="$T/short.psk" >"$T/bad.out" 2>&1; then
  fail "a 2-byte key accepted"; fi
grep -q "short.psk:1: the key of 'pc01' must be 16 to 256 bytes" "$T/bad.out" || { cat "$T/bad.out"; fail "short key message"; }
grep -q abcd "$T/bad.out" && fail "the key is in the error"
if df device set pc01 --nbd-psk maybe 2>"$T/bad.out"; then fail "--nbd-psk maybe"; fi
grep -q "takes generate or none" "$T/bad.out" || fail "--nbd-psk message"
if df farm set nbd-tls maybe 2>"$T/bad.out"; then fail "nbd-tls maybe"; fi
df --json farm show | python3 -c 'import json,sys; assert json.load(sys.stdin)["nbd_tls"] == "require"' ||
  fail "a refused farm set changed the setting"
pass "bad TLS options: one-line errors, nothing changed"
