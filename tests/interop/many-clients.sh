#!/bin/bash
# Many devices at once on a few worker threads: 48 devices, each client
# writes its own pattern through its own cache while 16 more read the vdisk
# export; every device reads back only its own data.
. "$TESTS_SRCDIR/lib.sh"
need nbdsh
n=48

make_raw "$T/disk.raw" 16
df init >/dev/null
df vdisk import golden "$T/disk.raw" >/dev/null
for i in $(seq $n); do
  df device add "d$i" --mac "$(printf '52:54:00:00:10:%02x' "$i")" --vdisk golden \
    --cache "$([ $((i % 2)) = 0 ] && echo server || echo ram:4)" >/dev/null
done
start_streamsvc --threads 2
nthreads=$(ls "/proc/$STREAMSVC_PID/task" | wc -l)

pids=""
for i in $(seq $n); do
  timeout 120 nbdsh -u "$(uri "device/d$i")" -c "
import random
pat = bytes([$i]) * 65536
offs = random.Random($i).sample(range(0, 16 << 20, 65536), 24)
for o in offs:
    h.pwrite(pat, o)
for o in offs:
    assert h.pread(65536, o) == pat, o
" >"$T/c$i.log" 2>&1 &
  pids="$pids $!"
done
for i in $(seq 16); do
  timeout 120 nbdsh -u "$(uri vdisk/golden)" -c "
base = open('$T/disk.raw', 'rb').read()
for o in range(0, 16 << 20, 1 << 20):
    assert h.pread(1 << 20, o) == base[o:o + (1 << 20)], o
" >"$T/r$i.log" 2>&1 &
  pids="$pids $!"
done
bad=0
for p in $pids; do wait "$p" || bad=$((bad + 1)); done
[ "$bad" -eq 0 ] || { cat "$T"/c*.log "$T"/r*.log | head -20; fail "$bad clients failed"; }
# the server used a fixed, small number of threads for all of them
[ "$nthreads" -le 8 ] || fail "streamsvc runs $nthreads threads"
# caches stayed separate: device 1 never sees device 2's pattern
nbdsh -u "$(uri device/d1)" -c "
import random
offs = set(random.Random(1).sample(range(0, 16 << 20, 65536), 24))
base = open('$T/disk.raw', 'rb').read()
for o in range(0, 16 << 20, 65536):
    want = bytes([1]) * 65536 if o in offs else base[o:o + 65536]
    assert h.pread(65536, o) == want, o
" || fail "device d1 sees foreign data"
pass "$n writers + 16 readers on $nthreads threads"
