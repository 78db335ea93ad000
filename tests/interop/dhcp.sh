#!/bin/bash
# ProxyDHCP interop: crafted DHCP packets (dhcp-client.py) get the right
# offers (BIOS, UEFI, iPXE, 4011 REQUEST, overload) or silence (other
# architectures, non-PXE, every DHCP bad input of BAD-INPUTS.md); the
# server keeps answering after them, and goes silent while unhealthy.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bootstrap-lib.sh"
need python3
CLIENT=$(dirname "$0")/dhcp-client.py

df init >/dev/null
start_streamsvc
add_streamsvc_server ss1
start_bootstrapsvc
wait_log "stream server ss1 is now healthy" || { cat "$BS_LOG"; fail "ss1 never healthy"; }

python3 "$CLIENT" 127.0.0.1 "$DHCP_PORT" "$PXE_PORT" 127.0.0.1 | tee "$T/dhcp.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "ProxyDHCP answers"
grep -q "not answering: no boot file for this client architecture" "$BS_LOG" ||
  fail "no log line for an unsupported architecture"
grep -q "(arch 7, HTTPClient): not answering: HTTP boot client architecture" "$BS_LOG" ||
  fail "no log line for a refused UEFI HTTP boot request"
grep -q "(arch 16, HTTPClient) -> http://127.0.0.1:[0-9]*/ipxe.efi" "$BS_LOG" ||
  fail "no log line for the UEFI HTTP boot offer"
grep -q '&token=[0-9]' "$BS_LOG" && fail "a one-time boot token reached the log"
grep -q 'iPXE) -> http://.*&token=(one-time token)' "$BS_LOG" || fail "no log line for the script URL"
pass "offers and silences as expected; log line for unsupported architectures; tokens not logged"

# Unhealthy: the only stream server stops -> this bootstrap server is silent.
stop_streamsvc
wait_log "stream server ss1 is now unhealthy" || fail "ss1 never seen unhealthy"
python3 "$CLIENT" 127.0.0.1 "$DHCP_PORT" "$PXE_PORT" 127.0.0.1 --expect-silence >"$T/silent.out" ||
  { cat "$T/silent.out"; fail "answered while unhealthy"; }
pass "silent while no stream server is healthy"
kill -0 "$BS_PID" || fail "bootstrapsvc died"
