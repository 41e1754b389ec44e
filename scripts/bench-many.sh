#!/usr/bin/env bash
# Many files: copying folders through bsmount against parallel downloaders, on the same data
# behind the same emulated cloud link (30 ms before every response, 100 MB/s per connection).
#   scripts/bench-many.sh     SMALL=2000 (files of 64 KiB), LARGE=200 (files of 16 MiB)
# Rows: serial `cp -r`, `tar cf - | wc -c` and `rsync -a` through bsmount; `rclone copy
# --transfers 16` and `aria2c -j16 -i` (URL list) from the emulator's /browse/; `rclone mount`
# + `cp -r`. Bytes are compared with the source for every copy. Writes many-results.json.
source "$(dirname "$0")/lib.sh"
SMALL=${SMALL:-2000}
LARGE=${LARGE:-200}
OUT=${OUT:-$ROOT}
CLOUD=(--latency-ms 30 --bandwidth 104857600)
need=()
for t in aria2c:aria2 rclone:rclone rsync:rsync; do command -v "${t%%:*}" >/dev/null || need+=("${t##*:}"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
build
R="$WORK/results"; : > "$R"
put() { echo "$1=$2" >> "$R"; echo "  $1 = $2" >&2; }
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { python3 -c "print(round($2 - $1, 2))"; }

echo "preparing data: $SMALL x 64 KiB in a run folder, $LARGE x 16 MiB" >&2
D="$WORK/data"
RUN="$D/Runs/240601_M00001_0007_000000000-BENCH"
python3 - "$RUN" "$SMALL" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
tiles = 4
for i in range(n):
    d = os.path.join(root, "Data/Intensities/BaseCalls/L001", f"C{i // tiles + 1}.1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"s_1_{1101 + i % tiles}.bcl.gz"), "wb") as f:
        f.write(os.urandom(65536))
PY
L="$D/Projects/Bench/Samples/Large"; mkdir -p "$L"
for i in $(seq -w 1 "$LARGE"); do head -c 16M /dev/urandom > "$L/f$i.bin"; done
start_emulator --data "$D" "${CLOUD[@]}"
M="$WORK/bs"
small_rel="Runs/$(basename "$RUN")/Files"
large_rel="Projects/Bench/Samples/Large/Files"

# copy NAME SRC_SUBDIR CMD... : time CMD (which copies into $WORK/dst), check bytes against SRC.
check() { diff -rq "$1" "$WORK/dst" >/dev/null || { echo "FAIL: $2 copied other bytes" >&2; exit 1; }; }
timed() { local name=$1; shift; rm -rf "$WORK/dst"; drop; local t0 t1; t0=$(now); "$@"; t1=$(now); put "$name" "$(secs "$t0" "$t1")"; }

for set in small large; do
  if [ $set = small ]; then rel=$small_rel; src=$RUN; else rel=$large_rel; src=$L; fi
  echo "== $set: bsmount (a fresh mount for each tool: nothing cached)" >&2
  mount_at "$M"; ls -lR "$M/$rel" > /dev/null
  c0=$(emu_stat content_requests); a0=$(emu_stat api_requests)
  timed "${set}_bsmount_cp" cp -r "$M/$rel" "$WORK/dst"; check "$src" "bsmount cp -r"
  put "${set}_bsmount_cp_api_requests" $(( $(emu_stat api_requests) - a0 ))
  put "${set}_bsmount_cp_content_requests" $(( $(emu_stat content_requests) - c0 ))
  put "${set}_bsmount_rss_MiB" $(( $(awk '/VmHWM/ {print $2}' "/proc/$(mount_stat "$M" pid)/status") / 1024 ))
  "$B" unmount "$M" >/dev/null; mount_at "$M"; ls -lR "$M/$rel" > /dev/null
  timed "${set}_bsmount_tar" sh -c "tar cf - -C '$M/$rel' . | wc -c > /dev/null"
  "$B" unmount "$M" >/dev/null; mount_at "$M"; ls -lR "$M/$rel" > /dev/null
  timed "${set}_bsmount_rsync" rsync -a "$M/$rel/" "$WORK/dst/"; check "$src" "bsmount rsync"
  "$B" unmount "$M" >/dev/null

  echo "== $set: rclone copy, aria2c, rclone mount over /browse/" >&2
  browse="$URL/browse/$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))" "$rel")/"
  timed "${set}_rclone_copy16" rclone copy --http-url "$browse" :http: "$WORK/dst" --transfers 16 --checkers 16; check "$src" "rclone copy"
  python3 - "$src" "$browse" > "$WORK/urls.txt" <<'PY'
import os, sys, urllib.parse
src, base = sys.argv[1], sys.argv[2]
for d, _, fs in sorted(os.walk(src)):
    for f in sorted(fs):
        p = os.path.relpath(os.path.join(d, f), src)
        print(base + urllib.parse.quote(p) + "\n  out=" + p)
PY
  timed "${set}_aria2c_j16" aria2c -q -j16 -x1 --file-allocation=none --auto-file-renaming=false -d "$WORK/dst" -i "$WORK/urls.txt"; check "$src" "aria2c"
  RC="$WORK/rclone"; mkdir -p "$RC"
  rclone mount :http: "$RC" --http-url "$URL/browse/" --read-only --daemon --daemon-timeout 60s 2>/dev/null
  ls -lR "$RC/$rel" > /dev/null
  timed "${set}_rclone_mount_cp" cp -r "$RC/$rel" "$WORK/dst"; check "$src" "rclone mount cp -r"
  umount "$RC" 2>/dev/null || fusermount3 -u "$RC" || true
done

python3 - "$R" "$OUT/many-results.json" "$SMALL" "$LARGE" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    k, v = line.strip().split("=", 1)
    r[k] = float(v)
json.dump(r, open(sys.argv[2], "w"), indent=1)
n_small, n_large = int(sys.argv[3]), int(sys.argv[4])
for s, title in (("small", f"{n_small} x 64 KiB (run folder)"), ("large", f"{n_large} x 16 MiB")):
    ref = r[f"{s}_rclone_copy16"]
    print(f"\n{title}: seconds (speed relative to rclone copy --transfers 16)")
    print(f"| tool | s | x rclone-16 |\n|---|---|---|")
    for k, name in (("bsmount_cp", "cp -r through bsmount"), ("bsmount_tar", "tar cf - | wc -c through bsmount"),
                    ("bsmount_rsync", "rsync -a through bsmount"), ("rclone_copy16", "rclone copy --transfers 16"),
                    ("aria2c_j16", "aria2c -j16 -i (URL list)"), ("rclone_mount_cp", "rclone mount + cp -r")):
        v = r[f"{s}_{k}"]
        print(f"| {name} | {v:.2f} | {ref / v:.2f}x |")
    print(f"bsmount cp -r: {int(r[f'{s}_bsmount_cp_api_requests'])} API requests, "
          f"{int(r[f'{s}_bsmount_cp_content_requests'])} content requests, peak RSS {int(r[f'{s}_bsmount_rss_MiB'])} MiB")
PY
