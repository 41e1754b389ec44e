#!/usr/bin/env bash
# Upload benchmark: `cp` of a file into a `--write` mount (parts of 8 MiB sent in parallel)
# against one stream of the same bytes (`curl -T`, one PUT of the whole file as one part),
# both to the same emulator behind the same emulated cloud link (30 ms before every
# response, 100 MB/s per connection, uploads paced like downloads). Checks the uploaded
# file's md5 through a fresh read-only mount. With the write-back spool `cp` returns before
# the upload ends, so the time is to `bsmount complete` (which waits for the uploads); the
# write-through mode (`--write-through`) is timed too. Then the many-files row: `cp -r` of
# 300 x 64 KiB against `cp` of the same bytes as one file, and the time until all are uploaded.
#   scripts/bench-upload.sh        SIZE=1G; prints the table, appends upload_* to $RESULTS if set
source "$(dirname "$0")/lib.sh"
SIZE=${SIZE:-1G}
CLOUD=(--latency-ms 30 --bandwidth 104857600)
build
now() { date +%s.%N; }
mbps() { python3 -c "print(round($1 / ($3 - $2) / 1e6, 1))"; }
put() { echo "  $1 = $2" >&2; [ -n "${RESULTS:-}" ] && echo "$1=$2" >> "$RESULTS"; true; }

echo "preparing a $SIZE file..." >&2
SRC="$WORK/upload.bin"; head -c "$SIZE" /dev/urandom > "$SRC"
BYTES=$(stat -c %s "$SRC"); WANT=$(md5sum "$SRC" | cut -d' ' -f1)
start_emulator --demo "${CLOUD[@]}"
api() { curl -sf -H "x-access-token: $TOKEN" "$@"; }
jid() { python3 -c "import json,sys; print(json.load(sys.stdin)['Response']['Id'])"; }

echo "1. one stream: curl -T of the whole file as one part" >&2
P=$(api -X POST -H 'Content-Type: application/json' -d '{"Name":"Upload bench (curl)"}' "$URL/v1pre3/projects" | jid)
A=$(api -X POST -H 'Content-Type: application/json' -d '{"Name":"curl"}' "$URL/v1pre3/projects/$P/appresults" | jid)
F=$(api -X POST "$URL/v1pre3/appresults/$A/files?name=upload.bin&directory=&multipart=true" | jid)
t0=$(now)
api -T "$SRC" "$URL/v1pre3/files/$F/parts/1" > /dev/null
api -X POST "$URL/v1pre3/files/$F?uploadstatus=complete" > /dev/null
t1=$(now)
CURL=$(mbps "$BYTES" "$t0" "$t1"); put upload_curl_MBps "$CURL"

echo "2. bsmount --write: cp into an appresult's Files/, then bsmount complete (waits for the upload)" >&2
M="$WORK/w"; mount_at "$M" --write --spool-dir "$WORK/spool"
mkdir "$M/Projects/Upload bench" "$M/Projects/Upload bench/AppResults/cp" "$M/Projects/Upload bench/AppResults/wt"
t0=$(now)
cp "$SRC" "$M/Projects/Upload bench/AppResults/cp/Files/upload.bin"
tc=$(now)
"$B" complete "$M/Projects/Upload bench/AppResults/cp" >/dev/null
t1=$(now)
BS=$(mbps "$BYTES" "$t0" "$t1"); put upload_bsmount_MBps "$BS"
SPOOLED=$(mbps "$BYTES" "$t0" "$tc"); put upload_bsmount_cp_returns_MBps "$SPOOLED"
RSS=$(( $(awk '/VmHWM/ {print $2}' "/proc/$(mount_stat "$M" pid)/status") / 1024 )); put upload_bsmount_rss_MiB "$RSS"
"$B" unmount "$M" >/dev/null
W="$WORK/wt"; mount_at "$W" --write --write-through
t0=$(now)
cp "$SRC" "$W/Projects/Upload bench/AppResults/wt/Files/upload.bin"
t1=$(now)
WT=$(mbps "$BYTES" "$t0" "$t1"); put upload_bsmount_write_through_MBps "$WT"
"$B" unmount "$W" >/dev/null
R="$WORK/r"; mount_at "$R"
GOT=$(md5sum "$R/Projects/Upload bench/AppResults/cp/Files/upload.bin" | cut -d' ' -f1)
[ "$GOT" = "$WANT" ] || { echo "uploaded bytes differ: $GOT != $WANT" >&2; exit 1; }
put upload_verified 1

printf '\nupload of %s bytes, emulated link 30 ms + 100 MB/s per connection (%s)\n' "$BYTES" "$(date +%F)"
printf '%-44s %9s %8s\n' "upload" "MB/s" "x curl"
printf '%-44s %9s %8s\n' "curl -T, one stream (one PUT, one part)" "$CURL" "1.00x"
printf '%-44s %9s %8s\n' "cp into bsmount --write (8 MiB parts)" "$BS" "$(python3 -c "print(f'{$BS/$CURL:.2f}x')")"
printf '%-44s %9s %8s\n' "  (cp itself returned at, spooled)" "$SPOOLED" ""
printf '%-44s %9s %8s\n' "cp into bsmount --write --write-through" "$WT" "$(python3 -c "print(f'{$WT/$CURL:.2f}x')")"
printf 'bsmount peak RSS %s MiB; bytes checked by md5 through a fresh read-only mount\n' "$RSS"

echo "3. many files: cp -r of 300 x 64 KiB against cp of the same bytes as one file" >&2
mkdir -p "$WORK/many"
for i in $(seq 1 300); do head -c 65536 /dev/urandom > "$WORK/many/f$i.bin"; done
cat "$WORK"/many/* > "$WORK/many.bin"
M="$WORK/w2"; mount_at "$M" --write --spool-dir "$WORK/spool"
mkdir "$M/Projects/Upload bench/AppResults/many" "$M/Projects/Upload bench/AppResults/one"
t0=$(now); cp -r "$WORK/many" "$M/Projects/Upload bench/AppResults/many/Files/"; t1=$(now)
"$B" complete "$M/Projects/Upload bench/AppResults/many" >/dev/null; t2=$(now)
t3=$(now); cp "$WORK/many.bin" "$M/Projects/Upload bench/AppResults/one/Files/"; t4=$(now)
"$B" complete "$M/Projects/Upload bench/AppResults/one" >/dev/null; t5=$(now)
"$B" unmount "$M" >/dev/null
python3 - "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" <<'PY'
import sys
t0, t1, t2, t3, t4, t5 = map(float, sys.argv[1:])
print(f"\n{'19 MiB written as':44} {'cp returns':>11} {'all uploaded':>13}")
print(f"{'cp -r of 300 x 64 KiB':44} {t1 - t0:10.2f}s {t2 - t0:12.2f}s")
print(f"{'cp of one file':44} {t4 - t3:10.2f}s {t5 - t3:12.2f}s")
print(f"{'ratio (many / one)':44} {(t1 - t0) / (t4 - t3):10.1f}x {(t2 - t0) / (t5 - t3):12.1f}x")
PY
