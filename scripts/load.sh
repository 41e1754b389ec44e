#!/usr/bin/env bash
# Load run: 64 concurrent readers (48 on different files, 16 on the same one) plus `find` and
# `ls -l` storms for DURATION seconds (default 180). Reports errors, rounds, peak RSS of the
# mount against its cache budget, and the most connections it held open.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-180}
CACHE=${CACHE:-256M}
build
start_emulator --synthetic "projects=4,samples=6,sample_files=2,sample_file_size=32M,runs=1,run_files=20000,run_file_size=4K" --latency-ms 5
mount_at "$WORK/mnt" --cache-size "$CACHE"
pid=$(mount_stat "$WORK/mnt" pid)
port=${URL##*:}
mapfile -t files < <(find "$WORK/mnt/Projects" -type f -path '*/Files/*' | head -48)
end=$(( $(date +%s) + DURATION ))
errors="$WORK/errors"; : > "$errors"
reader() { local n=0; while [ "$(date +%s)" -lt "$end" ]; do cat "$1" > /dev/null 2>>"$errors" || echo "read $1" >> "$errors"; n=$((n+1)); done; echo "$n" >> "$WORK/rounds"; }
workers=()
for f in "${files[@]}"; do reader "$f" & workers+=($!); done
for _ in $(seq 1 16); do reader "${files[0]}" & workers+=($!); done
for _ in 1 2; do ( while [ "$(date +%s)" -lt "$end" ]; do find "$WORK/mnt" -type f > /dev/null 2>>"$errors" || echo find >> "$errors"; ls -lR "$WORK/mnt/Projects" > /dev/null 2>>"$errors" || echo ls >> "$errors"; done ) & workers+=($!); done
maxconn=0
while [ "$(date +%s)" -lt "$end" ]; do
  # Established sockets whose remote end is the emulator: the mount's side only.
  c=$(awk -v p=":$(printf '%04X' "$port")" '$3 ~ p"$" && $4 == "01"' "/proc/$pid/net/tcp" | wc -l)
  [ "${c:-0}" -gt "$maxconn" ] && maxconn=$c
  sleep 1
done
wait "${workers[@]}"   # not the emulator, also a job of this shell
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
budget=$(python3 -c "
import re,sys; s='$CACHE'; m=re.match(r'([0-9.]+)([KMG]?)',s.upper()); print(int(float(m.group(1))*{'':1,'K':1<<10,'M':1<<20,'G':1<<30}[m.group(2)]))")
echo "duration ${DURATION}s  readers 64  rounds $(awk '{s+=$1} END {print s}' "$WORK/rounds")  errors $(wc -l < "$errors")"
echo "peak RSS $((hwm/1024)) MiB  (cache budget $((budget>>20)) MiB + 64 MiB = $(((budget>>20)+64)) MiB)  max open connections $maxconn"
echo "mount: bytes served $(mount_stat "$WORK/mnt" reads.bytes_served)  cache hit rate $(mount_stat "$WORK/mnt" cache.hit_rate)  API requests $(mount_stat "$WORK/mnt" api.api_requests)"
[ ! -s "$errors" ] && [ $((hwm*1024)) -le $((budget + (64<<20))) ]
