#!/usr/bin/env bash
# The demo: builds bsmount, then mounts a built-in demo BaseSpace account at ./BaseSpace-demo
# (or the directory given) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --quiet
exec target/release/bsmount demo "$@"
