#!/usr/bin/env bash
# Read-path benchmark: bsmount side by side with curl, aria2c, rclone mount and httpdirfs on the
# same files behind the same emulated cloud link (30 ms before every response, 100 MB/s per
# connection). Prints a table with ratios to aria2c and rclone, writes bench-results.json and
# bench-results.png (next to this script's repo root, or $OUT).
#   scripts/bench.sh              SIZE=1G (sequential file), OUT=.
source "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
OUT=${OUT:-$ROOT}
CLOUD=(--latency-ms 30 --bandwidth 104857600)
need=()
for t in fio:fio aria2c:aria2 rclone:rclone httpdirfs:httpdirfs samtools:samtools; do command -v "${t%%:*}" >/dev/null || need+=("${t##*:}"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
python3 -c "import matplotlib" 2>/dev/null || pip install --quiet matplotlib >/dev/null 2>&1 || true
build
R="$WORK/results"; : > "$R"
put() { echo "$1=$2" >> "$R"; echo "  $1 = $2" >&2; }
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { python3 -c "print(round($2 - $1, 3))"; }
mbps() { python3 -c "print(round($1 / ($3 - $2) / 1e6, 1))"; }
# rate FILE: MB/s reading FILE sequentially, for at most LIMIT seconds (slow tools are not
# waited for: the bytes read so far over the time taken).
LIMIT=${LIMIT:-60}
rate() {
  python3 - "$1" "$LIMIT" <<'PY'
import sys, time
path, limit = sys.argv[1], float(sys.argv[2])
n, t0 = 0, time.monotonic()
with open(path, "rb", buffering=0) as f:
    while time.monotonic() - t0 < limit:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
print(round(n / (time.monotonic() - t0) / 1e6, 1))
PY
}

# --- data: one large file, the demo BAM, 16 files for concurrency, all behind one emulator
echo "preparing data ($SIZE file, demo BAM, 16 x 128 MiB)..." >&2
D="$WORK/data"; mkdir -p "$D/Projects/Bench/Samples/Big" "$D/Projects/Bench/AppResults/Align" "$D/Projects/Bench/Samples/Many"
head -c "$SIZE" /dev/urandom > "$D/Projects/Bench/Samples/Big/big.bin"
for i in $(seq -w 1 16); do head -c 128M /dev/urandom > "$D/Projects/Bench/Samples/Many/f$i.bin"; done
"$B" emulator --demo > "$WORK/demo.out" & demo=$!
for _ in $(seq 1 300); do grep -q '^Access token' "$WORK/demo.out" 2>/dev/null && break; sleep 0.1; done
DURL=$(sed -n 's/^API server: //p' "$WORK/demo.out")
curl -s "$DURL/_emulator/manifest?md5=0" | python3 -c "
import json,sys
for f in json.load(sys.stdin)['files']:
    if f['path'].split('/')[-1] in ('NA12878.bam','NA12878.bam.bai'): print(f['path'])" | while read -r p; do
  curl -s -o "$D/Projects/Bench/AppResults/Align/$(basename "$p")" "$DURL/browse/$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))" "$p")"
done
kill $demo
start_emulator --data "$D" "${CLOUD[@]}"
BYTES=$(stat -c %s "$D/Projects/Bench/Samples/Big/big.bin")
put file_bytes "$BYTES"
big_rel="Projects/Bench/Samples/Big/Files/big.bin"
id=$(curl -s "$URL/_emulator/manifest?md5=0" | python3 -c "import json,sys; print([f['id'] for f in json.load(sys.stdin)['files'] if f['path']=='$big_rel'][0])")
presigned() { curl -s -H "x-access-token: $TOKEN" "$URL/v1pre3/files/$id/content?redirect=meta" | python3 -c "import json,sys; print(json.load(sys.stdin)['Response']['HrefContent'])"; }

echo "1-2. bsmount sequential, cold then warm" >&2
M="$WORK/bs"; mount_at "$M"; drop
t0=$(now); cat "$M/$big_rel" > /dev/null; t1=$(now)
put bsmount_cold_MBps "$(mbps "$BYTES" "$t0" "$t1")"
put bsmount_cold_rss_MiB $(( $(awk '/VmHWM/ {print $2}' "/proc/$(mount_stat "$M" pid)/status") / 1024 ))
t0=$(now); cat "$M/$big_rel" > /dev/null; t1=$(now)
put bsmount_warm_MBps "$(mbps "$BYTES" "$t0" "$t1")"
# The same cold read without ETag verification (the md5 of every byte costs CPU).
"$B" unmount "$M" >/dev/null; mount_at "$M" --no-verify; drop
t0=$(now); cat "$M/$big_rel" > /dev/null; t1=$(now)
put bsmount_cold_noverify_MBps "$(mbps "$BYTES" "$t0" "$t1")"
"$B" unmount "$M" >/dev/null; mount_at "$M"; drop
fio --name=seq --filename="$M/$big_rel" --rw=read --bs=1M --readonly --output-format=json > "$WORK/fio-seq.json" 2>/dev/null
put bsmount_fio_seq_MBps "$(python3 -c "import json; print(round(json.load(open('$WORK/fio-seq.json'))['jobs'][0]['read']['bw_bytes']/1e6,1))")"

echo "2b. re-read after a remount: files kept whole in --cache-dir, handed to the kernel (passthrough)" >&2
"$B" unmount "$M" >/dev/null; DC="$WORK/diskcache"
BAM="Projects/Bench/AppResults/Align/Files/NA12878.bam"
mount_at "$M" --cache-dir "$DC" --cache-dir-size 4G
cat "$M/$big_rel" "$M/$BAM" "$M/$BAM.bai" > /dev/null
for _ in $(seq 1 300); do [ "$(mount_stat "$M" disk_cache.files_kept_whole)" -ge 3 ] && break; sleep 0.1; done
"$B" unmount "$M" >/dev/null; mount_at "$M" --cache-dir "$DC" --cache-dir-size 4G; drop
cpu() { awk '{print $14 + $15}' "/proc/$(mount_stat "$M" pid)/stat"; }
c0=$(emu_stat content_requests); u0=$(cpu)
t0=$(now); cat "$M/$big_rel" > /dev/null; t1=$(now)
u1=$(cpu)
put bsmount_disk_MBps "$(mbps "$BYTES" "$t0" "$t1")"
put bsmount_disk_cpu_s "$(python3 -c "print(round(($u1 - $u0) / $(getconf CLK_TCK), 2))")"
cp "$D/Projects/Bench/Samples/Big/big.bin" "$WORK/local.bin"; drop
t0=$(now); cat "$WORK/local.bin" > /dev/null; t1=$(now)
put local_file_MBps "$(mbps "$BYTES" "$t0" "$t1")"
drop
t0=$(now); samtools view -c "$M/$BAM" chr1:1000000-1001000 > /dev/null; t1=$(now)
put samtools_cached_region_s "$(secs "$t0" "$t1")"
drop
fio --name=rand --filename="$M/$big_rel" --rw=randread --bs=4k --readonly --number_ios=2000 --norandommap --randrepeat=1 --output-format=json > "$WORK/fio-cached.json" 2>/dev/null
fio --name=rand --filename="$WORK/local.bin" --rw=randread --bs=4k --readonly --number_ios=2000 --norandommap --randrepeat=1 --output-format=json > "$WORK/fio-local.json" 2>/dev/null
for w in cached local; do
  put "${w}_rand4k_p50_ms" "$(python3 -c "import json; print(round(json.load(open('$WORK/fio-$w.json'))['jobs'][0]['read']['clat_ns']['percentile']['50.000000']/1e6, 3))")"
done
rm -f "$WORK/local.bin"
put bsmount_disk_content_requests $(( $(emu_stat content_requests) - c0 ))
put passthrough_opens "$(mount_stat "$M" disk_cache.passthrough_opens)"
"$B" unmount "$M" >/dev/null; mount_at "$M"

echo "3. curl and aria2c on the presigned URL" >&2
t0=$(now); curl -s -o /dev/null "$(presigned)"; t1=$(now)
put curl_MBps "$(mbps "$BYTES" "$t0" "$t1")"
t0=$(now); aria2c -q -x16 -s16 -k8M --file-allocation=none --allow-overwrite=true -d "$WORK" -o aria.bin "$(presigned)"; t1=$(now)
rm -f "$WORK/aria.bin"
put aria2c_MBps "$(mbps "$BYTES" "$t0" "$t1")"

echo "4. rclone mount and httpdirfs over /browse/" >&2
RC="$WORK/rclone"; mkdir -p "$RC"
rclone mount :http: "$RC" --http-url "$URL/browse/" --read-only --daemon --daemon-timeout 60s 2>/dev/null && MOUNTS+=("$RC")
put rclone_MBps "$(rate "$RC/$big_rel")"
umount "$RC" 2>/dev/null || fusermount3 -u "$RC" || true
HD="$WORK/httpdirfs"; mkdir -p "$HD"
httpdirfs --cache-location "$WORK/hdcache" "$URL/browse/" "$HD" >/dev/null 2>&1 && MOUNTS+=("$HD")
put httpdirfs_MBps "$(rate "$HD/$big_rel")"
umount "$HD" 2>/dev/null || fusermount3 -u "$HD" || true

echo "5. random reads (fio randread, cold mount)" >&2
for bs in 4k 256k; do
  "$B" unmount "$M" >/dev/null; mount_at "$M"; drop
  f0=$(mount_stat "$M" fetch.bytes)
  fio --name=rand --filename="$M/$big_rel" --rw=randread --bs=$bs --readonly --number_ios=200 --norandommap --randrepeat=1 --output-format=json > "$WORK/fio-$bs.json" 2>/dev/null
  f1=$(mount_stat "$M" fetch.bytes)
  python3 - "$WORK/fio-$bs.json" "$bs" "$f0" "$f1" >> "$R" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
p = j["clat_ns"]["percentile"]
bs, ios = sys.argv[2], j["total_ios"]
print(f"rand{bs}_p50_ms={p['50.000000']/1e6:.1f}")
print(f"rand{bs}_p99_ms={p['99.000000']/1e6:.1f}")
print(f"rand{bs}_MiB_fetched_per_read={(int(sys.argv[4]) - int(sys.argv[3])) / max(ios, 1) / 2**20:.2f}")
PY
done

echo "6. samtools region query on the BAM" >&2
"$B" unmount "$M" >/dev/null; mount_at "$M"; drop
c0=$(emu_stat content_requests)
t0=$(now); samtools view -c "$M/Projects/Bench/AppResults/Align/Files/NA12878.bam" chr1:1000000-1001000 > /dev/null; t1=$(now)
put samtools_region_s "$(secs "$t0" "$t1")"
put samtools_region_content_requests $(( $(emu_stat content_requests) - c0 ))

echo "8-9. 16 concurrent readers on different files" >&2
"$B" unmount "$M" >/dev/null; mount_at "$M"; drop
t0=$(now)
pids=()
for f in "$M"/Projects/Bench/Samples/Many/Files/*.bin; do cat "$f" > /dev/null & pids+=($!); done
wait "${pids[@]}"
t1=$(now)
put concurrent16_MBps "$(mbps $((16 * 128 << 20)) "$t0" "$t1")"
put concurrent16_rss_MiB $(( $(awk '/VmHWM/ {print $2}' "/proc/$(mount_stat "$M" pid)/status") / 1024 ))
"$B" unmount "$M" >/dev/null; kill "$EMU_PID"; EMU_PID=""

echo "7. find and ls -lR over a 100,000-file run" >&2
start_emulator --synthetic "projects=0,runs=1,run_files=100000,run_file_size=1K" "${CLOUD[@]}"
mount_at "$M"
a0=$(emu_stat api_requests)
t0=$(now); n=$(find "$M/Runs" -type f | wc -l); t1=$(now)
put find_100k_s "$(secs "$t0" "$t1")"
put find_100k_files "$n"
put find_100k_api_requests $(( $(emu_stat api_requests) - a0 ))
t0=$(now); ls -lR "$M/Runs" > /dev/null; t1=$(now)
put ls_lR_100k_warm_s "$(secs "$t0" "$t1")"

echo "10. upload: cp into a --write mount vs one curl stream" >&2
"$B" unmount "$M" >/dev/null 2>&1 || true
kill "$EMU_PID" 2>/dev/null || true; EMU_PID=""
RESULTS="$R" SIZE="$SIZE" "$ROOT/scripts/bench-upload.sh" > "$WORK/upload.txt"

python3 - "$R" "$OUT" <<'PY'
import json, sys, platform, datetime, os
r = {}
for line in open(sys.argv[1]):
    k, v = line.strip().split("=", 1)
    r[k] = float(v)
out = sys.argv[2]
r["_date"] = datetime.date.today().isoformat()
r["_machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM"
json.dump(r, open(os.path.join(out, "bench-results.json"), "w"), indent=2)
a, rc = r["aria2c_MBps"], r["rclone_MBps"]
rows = [("bsmount cold sequential (cat)", r["bsmount_cold_MBps"]),
        ("bsmount cold sequential, --no-verify", r["bsmount_cold_noverify_MBps"]), ("bsmount cold sequential (fio 1M)", r["bsmount_fio_seq_MBps"]),
        ("bsmount warm re-read", r["bsmount_warm_MBps"]), ("bsmount after remount (--cache-dir, passthrough)", r["bsmount_disk_MBps"]),
        ("local file (same disk)", r["local_file_MBps"]),
        ("curl, one stream", r["curl_MBps"]), ("aria2c -x16 -s16 -k8M", a),
        ("rclone mount (http backend)", rc), ("httpdirfs", r["httpdirfs_MBps"]), ("bsmount, 16 readers in parallel", r["concurrent16_MBps"])]
print(f"\nbsmount benchmark {r['_date']} ({r['_machine']}); emulated link: 30 ms latency, 100 MB/s per connection")
print(f"{'throughput':40} {'MB/s':>9} {'vs aria2c':>10} {'vs rclone':>10}")
for name, v in rows:
    print(f"{name:40} {v:9.1f} {v/a:9.2f}x {v/rc:9.2f}x")
print(f"\n{'random reads (cold)':40} {'p50 ms':>9} {'p99 ms':>10} {'MiB/read':>10}")
for bs in ("4k", "256k"):
    print(f"{'fio randread ' + bs:40} {r['rand'+bs+'_p50_ms']:9.1f} {r['rand'+bs+'_p99_ms']:10.1f} {r['rand'+bs+'_MiB_fetched_per_read']:10.2f}")
print(f"\nfiles kept whole in --cache-dir, after a remount (passthrough: {int(r['passthrough_opens'])} opens handed to the kernel, "
      f"{int(r['bsmount_disk_content_requests'])} content requests)")
print(f"{'':40} {'bsmount':>9} {'local file':>10}")
print(f"{'cat, MB/s (page cache dropped)':40} {r['bsmount_disk_MBps']:9.0f} {r['local_file_MBps']:10.0f}   mount CPU {r['bsmount_disk_cpu_s']:.2f} s")
print(f"{'fio randread 4k p50, ms':40} {r['cached_rand4k_p50_ms']:9.3f} {r['local_rand4k_p50_ms']:10.3f}")
print(f"{'samtools view -c region, s':40} {r['samtools_cached_region_s']:9.2f}")
print(f"\nsamtools view -c region on the demo BAM: {r['samtools_region_s']:.2f} s, {int(r['samtools_region_content_requests'])} content requests")
print(f"find over {int(r['find_100k_files'])} run files: {r['find_100k_s']:.2f} s, {int(r['find_100k_api_requests'])} API requests; ls -lR afterwards {r['ls_lR_100k_warm_s']:.2f} s")
print(f"peak RSS: {int(r['bsmount_cold_rss_MiB'])} MiB (sequential), {int(r['concurrent16_rss_MiB'])} MiB (16 readers); cache budget 512 MiB")
print(f"\n{'upload of the same file':40} {'MB/s':>9} {'vs curl':>10}")
print(f"{'curl -T, one stream':40} {r['upload_curl_MBps']:9.1f} {1:9.2f}x")
print(f"{'cp into bsmount --write':40} {r['upload_bsmount_MBps']:9.1f} {r['upload_bsmount_MBps']/r['upload_curl_MBps']:9.2f}x")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh([n for n, _ in rows][::-1], [v for _, v in rows][::-1], color="#3b7dd8")
    ax.set_xscale("log")
    ax.set_xlabel("MB/s, log scale (30 ms latency, 100 MB/s per connection)")
    ax.set_title(f"bsmount vs other tools, {r['_date']}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bench-results.png"), dpi=110)
except Exception as e:
    print(f"(no chart: {e})")
PY
