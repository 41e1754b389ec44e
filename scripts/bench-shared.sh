#!/usr/bin/env bash
# Many hosts, one cache: host A reads a file cold from BaseSpace (the emulator, cloud link:
# 30 ms per response, 100 MB/s per connection) with --shared-cache-dir; host B, another mount
# on the same directory, then reads it cold (its page cache dropped). Prints both speeds, the
# ratio and B's content requests.   scripts/bench-shared.sh   SIZE=1G
source "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
build
D="$WORK/data/Projects/Shared/Samples/S"; mkdir -p "$D"
head -c "$SIZE" /dev/urandom > "$D/big.bin"
BYTES=$(stat -c %s "$D/big.bin")
start_emulator --data "$WORK/data" --latency-ms 30 --bandwidth 104857600
C=${SHARED_DIR:-$WORK/shared-cache}; mkdir -p "$C"
A="$WORK/host-a"; B2="$WORK/host-b"
mount_at "$A" --shared-cache-dir "$C" --shared-cache-dir-size 4G
mount_at "$B2" --shared-cache-dir "$C" --shared-cache-dir-size 4G ${B_ARGS:-}
rel=Projects/Shared/Samples/S/Files/big.bin
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
mbps() { python3 -c "print(round($1 / ($3 - $2) / 1e6, 1))"; }
# The cold read from BaseSpace by a mount with no shared directory, for reference (twice:
# the first warms the emulator, which hashes a file when it is first served).
P="$WORK/plain"; mount_at "$P"
cat "$P/$rel" > /dev/null; "$B" unmount "$P" >/dev/null; mount_at "$P"
drop; t0=$(now); cat "$P/$rel" > /dev/null; t1=$(now)
p=$(mbps "$BYTES" "$t0" "$t1")
drop; t0=$(now); cat "$A/$rel" > /dev/null; t1=$(now)
a=$(mbps "$BYTES" "$t0" "$t1")
blocks=$(( (BYTES + 1048575) / 1048576 ))
for _ in $(seq 1 600); do
  [ $(( $(mount_stat "$A" shared_cache.writes) + $(mount_stat "$A" shared_cache.writes_skipped) )) -ge "$blocks" ] && break; sleep 0.1
done
skipped=$(mount_stat "$A" shared_cache.writes_skipped)
drop; c0=$(emu_stat content_requests)
t0=$(now); cat "$B2/$rel" > /dev/null; t1=$(now)
b=$(mbps "$BYTES" "$t0" "$t1")
req=$(( $(emu_stat content_requests) - c0 ))
"$B" unmount "$B2" >/dev/null; mount_at "$B2" --shared-cache-dir "$C" --shared-cache-dir-size 4G
cmp "$B2/$rel" "$D/big.bin" || { echo "FAIL: host B read other bytes" >&2; exit 1; }
python3 - "$a" "$b" "$req" "$skipped" "$p" <<'PY'
import sys
a, b, req, skipped, p = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print("| cold read of the file | MB/s | content requests |\n|---|---|---|")
print(f"| a mount without a shared directory, from BaseSpace | {p:.0f} | |")
print(f"| host A, from BaseSpace, publishing to the shared directory | {a:.0f} | |")
print(f"| host B, from the shared directory | {b:.0f} | {req} |")
print(f"host B: {b / p:.2f}x a fetch from BaseSpace ({skipped} blocks host A did not publish; bytes compared: identical)")
PY
