#!/usr/bin/env bash
# A whole project as fast as one folder: walks and copies across many samples, through bsmount
# and with rclone over the emulator's /browse/, on the same data and the same emulated cloud link
# (30 ms before every response; 100 MB/s per connection for the copies).
#   scripts/bench-walk.sh        SAMPLES=200 (cohort), BIG=16 (samples of 2 x 64 MiB)
# Rows: `find MNT/Projects` over 10 projects x 100 samples (+10 appresults each) against
# `rclone lsf -R --checkers 16`; `cp MNT/.../Samples/*/Files/*.fastq.gz dst/` (nothing listed
# before) against `rclone copy --transfers 16 --include '*.fastq.gz'`, with 2 MiB and 64 MiB
# FASTQs. Each bsmount row gives its API/content requests and the mount's peak RSS; every copy
# is compared byte for byte with the source. Writes walk-results.json.
source "$(dirname "$0")/lib.sh"
SAMPLES=${SAMPLES:-200}
BIG=${BIG:-16}
OUT=${OUT:-$ROOT}
command -v rclone >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null; }
build
R="$WORK/results"; : > "$R"
put() { echo "$1=$2" >> "$R"; echo "  $1 = $2" >&2; }
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { python3 -c "print(round($2 - $1, 2))"; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

echo "== find over 1,000 samples (latency 30 ms)" >&2
start_emulator --synthetic projects=10,samples=100,sample_files=2,sample_file_size=4K,appresults=10,appresult_files=2,appresult_file_size=4K,runs=0 --latency-ms 30
M="$WORK/walk"; mount_at "$M"
P=$(ls "$M/Projects" | head -1)
a0=$(emu_stat api_requests); ls "$M/Projects/$P/Samples" > /dev/null; put ls_samples_api_requests $(( $(emu_stat api_requests) - a0 ))
S=$(ls "$M/Projects/$P/Samples" | head -1)
a0=$(emu_stat api_requests); ls "$M/Projects/$P/Samples/$S/Files" > /dev/null; put ls_files_api_requests $(( $(emu_stat api_requests) - a0 ))
"$B" unmount "$M" >/dev/null; mount_at "$M"
pid=$(mount_stat "$M" pid); idle=$(kib "$pid" VmRSS)
a0=$(emu_stat api_requests); t0=$(now); n=$(find "$M/Projects" | wc -l); t1=$(now)
put find_bsmount "$(secs "$t0" "$t1")"; put find_entries "$n"
put find_api_requests $(( $(emu_stat api_requests) - a0 ))
put find_listings_ahead "$(mount_stat "$M" listings_ahead)"
put find_rss_idle_MiB $(( idle / 1024 )); put find_rss_peak_MiB $(( $(kib "$pid" VmHWM) / 1024 ))
sync; echo 2 > /proc/sys/vm/drop_caches 2>/dev/null || true   # the kernel forgets the inodes
for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; done
put find_rss_after_forget_MiB $(( $(kib "$pid" VmRSS) / 1024 ))
"$B" unmount "$M" >/dev/null
t0=$(now); r=$(rclone lsf -R --checkers 16 --http-url "$URL/browse/" :http: 2>/dev/null | wc -l); t1=$(now)
put find_rclone_lsf16 "$(secs "$t0" "$t1")"; put find_rclone_entries "$r"
kill "$EMU_PID"; EMU_PID=""

# cohort NAME N SIZE_MIB: N samples x 2 FASTQs of SIZE_MIB, copied by glob through bsmount and by rclone.
cohort() {
  local name=$1 n=$2 size=$3 d="$WORK/data-$1"
  echo "== $name: $n samples x 2 x $size MiB (latency 30 ms, 100 MB/s per connection)" >&2
  python3 - "$d" "$n" "$size" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(1, n + 1):
    s = f"{root}/Projects/Cohort/Samples/S{i:04d}"; os.makedirs(s, exist_ok=True)
    for r in (1, 2):
        with open(f"{s}/S{i:04d}_S{i}_L001_R{r}_001.fastq.gz", "wb") as f:
            f.write(os.urandom(size << 20))
PY
  start_emulator --data "$d" --latency-ms 30 --bandwidth 104857600
  local m="$WORK/m-$name" dst="$WORK/dst-$name"
  mount_at "$m"; rm -rf "$dst"; mkdir -p "$dst"; drop
  local a0 c0 t0 t1
  a0=$(emu_stat api_requests); c0=$(emu_stat content_requests)
  t0=$(now); cp "$m"/Projects/Cohort/Samples/*/Files/*.fastq.gz "$dst/"; t1=$(now)
  put "${name}_bsmount_cp" "$(secs "$t0" "$t1")"
  put "${name}_bsmount_api_requests" $(( $(emu_stat api_requests) - a0 ))
  put "${name}_bsmount_content_requests" $(( $(emu_stat content_requests) - c0 ))
  put "${name}_bsmount_rss_MiB" $(( $(kib "$(mount_stat "$m" pid)" VmHWM) / 1024 ))
  for f in "$dst"/*; do b=$(basename "$f"); cmp -s "$f" "$d/Projects/Cohort/Samples/${b%%_*}/$b" || { echo "FAIL: $b differs" >&2; exit 1; }; done
  [ "$(ls "$dst" | wc -l)" = $(( n * 2 )) ] || { echo "FAIL: copied $(ls "$dst" | wc -l) files" >&2; exit 1; }
  "$B" unmount "$m" >/dev/null
  rm -rf "$dst"; mkdir -p "$dst"; drop
  t0=$(now); rclone copy --http-url "$URL/browse/Projects/Cohort/Samples/" :http: "$dst" --include '*.fastq.gz' --transfers 16 --checkers 16 2>/dev/null; t1=$(now)
  put "${name}_rclone_copy16" "$(secs "$t0" "$t1")"
  [ "$(find "$dst" -type f | wc -l)" = $(( n * 2 )) ] || { echo "FAIL: rclone copied too few" >&2; exit 1; }
  kill "$EMU_PID"; EMU_PID=""; rm -rf "$d" "$dst"
}
cohort small "$SAMPLES" 2
cohort big "$BIG" 64

python3 - "$R" "$OUT/walk-results.json" "$SAMPLES" "$BIG" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    k, v = line.strip().split("=", 1)
    r[k] = float(v)
json.dump(r, open(sys.argv[2], "w"), indent=1)
i = lambda k: int(r[k])
print(f"\n| what | bsmount | rclone (16 in parallel) | bsmount speed x rclone |\n|---|---|---|---|")
print(f"| `find MNT/Projects`, 1,000 samples ({i('find_entries')} entries; {i('find_api_requests')} API requests, "
      f"{i('find_listings_ahead')} listed ahead; RSS {i('find_rss_idle_MiB')} idle, {i('find_rss_peak_MiB')} peak, "
      f"{i('find_rss_after_forget_MiB')} MiB after forget) | {r['find_bsmount']:.2f} s | `lsf -R --checkers 16` "
      f"{r['find_rclone_lsf16']:.2f} s | {r['find_rclone_lsf16'] / r['find_bsmount']:.2f}x |")
for name, what in (("small", f"{sys.argv[3]} samples x 2 x 2 MiB"), ("big", f"{sys.argv[4]} samples x 2 x 64 MiB")):
    print(f"| cohort glob copy, {what} ({i(name + '_bsmount_api_requests')} API + {i(name + '_bsmount_content_requests')} "
          f"content requests, peak RSS {i(name + '_bsmount_rss_MiB')} MiB) | {r[name + '_bsmount_cp']:.2f} s | "
          f"`copy --transfers 16` {r[name + '_rclone_copy16']:.2f} s | {r[name + '_rclone_copy16'] / r[name + '_bsmount_cp']:.2f}x |")
print(f"\nA lone `ls` of a project's Samples/: {i('ls_samples_api_requests')} API request; of one sample's Files/: "
      f"{i('ls_files_api_requests')}.")
PY
