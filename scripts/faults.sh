#!/usr/bin/env bash
# Fault run: `cp -r` of a multi-GiB account through the mount while the emulator injects 5%
# 500/503s, 3% mid-body connection resets, 3% 429s and expires presigned URLs after 4 s.
# Checks every copied byte against the emulator's manifest and prints the figures.
#   scripts/faults.sh            (SIZE=512M per FASTQ, SEED=7)
source "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-512M}
SEED=${SEED:-7}
build
start_emulator --synthetic "projects=2,samples=2,sample_files=2,sample_file_size=$SIZE,appresults=1,appresult_files=2,appresult_file_size=64M,runs=1,run_files=2000,run_file_size=64K" \
  --fail-rate 0.05 --reset-rate 0.03 --throttle-rate 0.03 --url-ttl 4 --seed "$SEED"
mount_at "$WORK/mnt"
mkdir -p "$WORK/copy"
start=$(date +%s.%N)
cp -r "$WORK/mnt/Projects" "$WORK/mnt/Runs" "$WORK/copy/"
end=$(date +%s.%N)
curl -s "$URL/_emulator/manifest" > "$WORK/manifest.json"
python3 - "$WORK" "$start" "$end" <<'PY'
import hashlib, json, os, sys
work, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
man = json.load(open(f"{work}/manifest.json"))["files"]
bad, total = [], 0
for f in man:
    h = hashlib.md5()
    with open(os.path.join(work, "copy", f["path"]), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    total += f["size"]
    if h.hexdigest() != f["md5"]:
        bad.append(f["path"])
secs = end - start
print(f"files {len(man)}  bytes {total} ({total/2**30:.2f} GiB)  time {secs:.1f} s  ({total/secs/1e6:.0f} MB/s)")
print(f"byte-identical: {'yes' if not bad else 'NO: ' + ', '.join(bad[:5])}")
sys.exit(1 if bad else 0)
PY
echo "faults injected $(emu_stat faults_injected)  presigned URLs handed out $(emu_stat url_requests)  expired-URL refusals $(emu_stat expired_refusals)"
echo "mount: retries $(mount_stat "$WORK/mnt" api.retries)  URL renewals $(mount_stat "$WORK/mnt" fetch.url_renewals)  API errors $(mount_stat "$WORK/mnt" api.errors)  read errors $(mount_stat "$WORK/mnt" reads.errors)"
