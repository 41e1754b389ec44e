# Shared by the benchmark, fault and load scripts: build, start an emulator, mount, clean up.
# shellcheck shell=bash
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B="$ROOT/target/release/bsmount"
WORK=$(mktemp -d /tmp/bsmount-run.XXXXXX)
EMU_PID=""
MOUNTS=()

build() { (cd "$ROOT" && cargo build --release --locked --quiet); }

cleanup() {
  for m in "${MOUNTS[@]}"; do "$B" unmount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true; done
  [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_emulator ARGS...: sets URL and TOKEN (and exports them for bsmount).
start_emulator() {
  "$B" emulator "$@" > "$WORK/emu.out" 2> "$WORK/emu.err" &
  EMU_PID=$!
  for _ in $(seq 1 600); do grep -q '^Access token:' "$WORK/emu.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^API server: //p' "$WORK/emu.out")
  TOKEN=$(sed -n 's/^Access token: //p' "$WORK/emu.out")
  [ -n "$TOKEN" ] || { cat "$WORK/emu.err" >&2; echo "emulator did not start" >&2; exit 1; }
  export BASESPACE_API_SERVER="$URL" BASESPACE_ACCESS_TOKEN="$TOKEN"
}

# mount_at DIR ARGS...
mount_at() {
  mkdir -p "$1"
  "$B" mount "$@" --log-file "$WORK/mount.log" >/dev/null
  MOUNTS+=("$1")
}

emu_stat() { curl -s "$URL/_emulator/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
mount_stat() { python3 -c "import json,sys; d=json.load(open('$1/.bsmount/stats')); print(eval('d' + ''.join('[%r]' % k for k in '$2'.split('.'))))"; }
