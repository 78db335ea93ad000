#!/bin/bash
# No stalls over iSCSI (issue 15): SYNCHRONIZE CACHE and FUA writes run
# on the I/O pool, not on the epoll worker.  streamsvc --threads 1 puts
# both sessions on one worker; device pcb's cache is server-persistent on
# a slow disk (every flush of it takes DISKFARM_FAULT_FLUSH_DELAY_MS =
# 400 ms); while a session of pcb writes 4 KiB + SYNCHRONIZE CACHE in a
# loop, a QD1 4 KiB reader of device pca must never wait for those
# flushes: its worst read stays below half a flush (with the flush on the
# worker it is a whole one).  The flusher's own flushes must take the
# delay (the fault is real) and succeed.
. "$TESTS_SRCDIR/lib.sh"
: "${ISCSI_STALL:?ISCSI_STALL not set}"
need qemu-img
DELAY_MS=400
qemu-img create -q -f raw "$T/disk.raw" 64M
df init >/dev/null
df vdisk import vd "$T/disk.raw" >/dev/null
df device add pca --mac 52:54:00:00:31:0a --vdisk vd --cache server >/dev/null
df device add pcb --mac 52:54:00:00:31:0b --vdisk vd --cache server-persistent >/dev/null
DISKFARM_FAULT_FLUSH_DELAY_MS=$DELAY_MS "$STREAMSVC" --farm "$FARM" --threads 1 \
  --nbd-listen 127.0.0.1:0 --iscsi-listen 127.0.0.1:0 --admin-listen none 2>"$T/streamsvc.log" &
_df_pids="$_df_pids $!"
for _ in $(seq 100); do grep -q 'iscsi listening' "$T/streamsvc.log" && break; sleep 0.1; done
port=$(grep -o 'iscsi listening on 127.0.0.1:[0-9]*' "$T/streamsvc.log" | sed 's/.*://')
[ -n "$port" ] || { cat "$T/streamsvc.log"; fail "streamsvc did not start"; }
out=$("$ISCSI_STALL" "127.0.0.1:$port" "iqn.2026-11.org.diskfarm:pca" \
      "iqn.2026-11.org.diskfarm:pcb" 4) || fail "iscsi-stall: $out $(tail -5 "$T/streamsvc.log")"
echo "figure: iSCSI, one worker, flushes of $DELAY_MS ms on another session: $out (us)"
read -r _ n _ p50 _ p99 _ max _ flushes _ fmax <<<"$out"
[ "$flushes" -ge 3 ] || fail "only $flushes flushes in 4 s"
[ "$fmax" -ge $((DELAY_MS * 1000)) ] || fail "a flush took $fmax us: the fault delay is not in force"
[ "$max" -lt $((DELAY_MS * 1000 / 2)) ] || fail "a read waited $max us behind a $DELAY_MS ms flush of another session (p99 $p99 us)"
pass "iSCSI flushes leave the worker: $n reads, worst $max us (p99 $p99) while $flushes flushes of $DELAY_MS ms ran"
