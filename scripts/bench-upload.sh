#!/usr/bin/env bash
# Upload benchmark: `cp` of a file into a `--write` mount (parts of 8 MiB sent in parallel)
# against one stream of the same bytes (`curl -T`, one PUT of the whole file as one part),
# both to the same emulator behind the same emulated cloud link (30 ms before every
# response, 100 MB/s per connection, uploads paced like downloads). Checks the uploaded
# file's md5 through a fresh read-only mount.
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

echo "2. bsmount --write: cp into an appresult's Files/" >&2
M="$WORK/w"; mount_at "$M" --write
mkdir "$M/Projects/Upload bench" "$M/Projects/Upload bench/AppResults/cp"
t0=$(now)
cp "$SRC" "$M/Projects/Upload bench/AppResults/cp/Files/upload.bin"
t1=$(now)
BS=$(mbps "$BYTES" "$t0" "$t1"); put upload_bsmount_MBps "$BS"
RSS=$(( $(awk '/VmHWM/ {print $2}' "/proc/$(mount_stat "$M" pid)/status") / 1024 )); put upload_bsmount_rss_MiB "$RSS"
"$B" unmount "$M" >/dev/null
R="$WORK/r"; mount_at "$R"
GOT=$(md5sum "$R/Projects/Upload bench/AppResults/cp/Files/upload.bin" | cut -d' ' -f1)
[ "$GOT" = "$WANT" ] || { echo "uploaded bytes differ: $GOT != $WANT" >&2; exit 1; }
put upload_verified 1

printf '\nupload of %s bytes, emulated link 30 ms + 100 MB/s per connection (%s)\n' "$BYTES" "$(date +%F)"
printf '%-44s %9s %8s\n' "upload" "MB/s" "x curl"
printf '%-44s %9s %8s\n' "curl -T, one stream (one PUT, one part)" "$CURL" "1.00x"
printf '%-44s %9s %8s\n' "cp into bsmount --write (8 MiB parts)" "$BS" "$(python3 -c "print(f'{$BS/$CURL:.2f}x')")"
printf 'bsmount peak RSS %s MiB; bytes checked by md5 through a fresh read-only mount\n' "$RSS"
