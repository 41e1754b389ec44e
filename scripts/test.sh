#!/usr/bin/env bash
# The project's test command: installs what it needs, checks style, runs every test.
# The mount tests mount real FUSE filesystems: run as root (or with /dev/fuse and fusermount3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
