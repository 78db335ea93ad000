# Helpers for the bootstrap interop tests (sourced after lib.sh).
#   BOOTSTRAPSVC, TFTP_CLIENT: binaries (set by meson)
: "${BOOTSTRAPSVC:?BOOTSTRAPSVC not set}"

# Start bootstrapsvc on 127.0.0.1 with every port chosen by the kernel.
# Extra arguments go to bootstrapsvc.  Sets BS_PID, BS_LOG, HTTP_PORT,
# TFTP_PORT, DHCP_PORT, PXE_PORT.
start_bootstrapsvc() {
  BS_LOG=$T/bootstrapsvc.log
  : >"$BS_LOG"
  "$BOOTSTRAPSVC" --farm "$FARM" --address 127.0.0.1 --http-port 0 \
    --tftp-port 0 --dhcp-port 0 --pxe-port 0 \
    --health-interval 300 "$@" >>"$BS_LOG" 2>&1 &
  BS_PID=$!
  _df_pids="$_df_pids $BS_PID"
  for _ in $(seq 100); do
    if grep -q ": ready" "$BS_LOG"; then
      HTTP_PORT=$(sed -n 's|.*http listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$BS_LOG" | tail -1)
      TFTP_PORT=$(sed -n 's|.*tftp listening on [0-9.]*:\([0-9]*\).*|\1|p' "$BS_LOG" | tail -1)
      DHCP_PORT=$(sed -n 's|.*proxydhcp listening on ports \([0-9]*\) and.*|\1|p' "$BS_LOG" | tail -1)
      PXE_PORT=$(sed -n 's|.*proxydhcp listening on ports [0-9]* and \([0-9]*\).*|\1|p' "$BS_LOG" | tail -1)
      [ -n "$TFTP_PORT" ] && return 0
    fi
    kill -0 "$BS_PID" 2>/dev/null || { cat "$BS_LOG"; fail "bootstrapsvc exited"; }
    sleep 0.1
  done
  cat "$BS_LOG"; fail "bootstrapsvc did not start"
}

# Wait until the bootstrap log matches a pattern (up to $2 tenths, default 50).
wait_log() {
  for _ in $(seq "${2:-50}"); do
    grep -q "$1" "$BS_LOG" && return 0
    sleep 0.1
  done
  return 1
}

# Register the running streamsvc (admin at $ADMIN) as stream server $1.
add_streamsvc_server() {
  df server add "$1" --address 127.0.0.1 --admin-port "${ADMIN##*:}" \
    --iscsi-port "${2:-3260}" >/dev/null
}
