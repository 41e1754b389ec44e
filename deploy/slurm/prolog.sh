#!/usr/bin/env bash
# Slurm Prolog (slurm.conf: Prolog=/etc/slurm/bsmount-prolog.sh, PrologFlags=Alloc):
# mounts the job user's BaseSpace account at /run/bsmount/$SLURM_JOB_ID for the job's
# lifetime, as that user (fusermount3 does the mount), with that user's
# ~/.basespace/default.cfg. Blocks are shared with every node through BSMOUNT_SHARED_CACHE
# (a directory on the cluster filesystem that all users' mounts may write).
set -euo pipefail
BSMOUNT=${BSMOUNT:-/usr/local/bin/bsmount}
SHARED=${BSMOUNT_SHARED_CACHE:-/shared/bsmount-cache}
SHARED_SIZE=${BSMOUNT_SHARED_CACHE_SIZE:-2T}
user=${SLURM_JOB_USER:?}
home=$(getent passwd "$user" | cut -d: -f6)
cfg="$home/.basespace/default.cfg"
[ -r "$cfg" ] || exit 0 # no BaseSpace credentials: nothing to mount
mp="/run/bsmount/${SLURM_JOB_ID:?}"
install -d -m 0700 -o "$user" "$mp"
runuser -u "$user" -- "$BSMOUNT" mount "$mp" --config "$cfg" \
  --shared-cache-dir "$SHARED" --shared-cache-dir-size "$SHARED_SIZE" \
  --log-file "/tmp/bsmount-$SLURM_JOB_ID.log"
# Jobs find it in $BASESPACE_MOUNT (TaskProlog: echo "export BASESPACE_MOUNT=$mp").
