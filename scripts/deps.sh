#!/usr/bin/env bash
# Installs the system packages bsmount's demo and tests use, if missing (Debian/Ubuntu).
# fuse3: fusermount3 for non-root mounts; samtools + tabix: reading BAM/VCF in place;
# jq + curl: the tests read `.json` and run `.curl` files as BaseMount's users do.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v samtools >/dev/null 2>&1 || need+=(samtools)
command -v tabix >/dev/null 2>&1 || need+=(tabix)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { echo "/dev/fuse is missing: run 'modprobe fuse' (in a container: --device /dev/fuse --cap-add SYS_ADMIN)" >&2; exit 1; }
fi
