#!/usr/bin/env bash
# Slurm Epilog (slurm.conf: Epilog=/etc/slurm/bsmount-epilog.sh): unmounts what prolog.sh
# mounted for the job. `bsmount unmount` waits for the mount to go; a mount a stray process
# still holds is detached lazily so the node is never left with a dead mount point.
set -uo pipefail
BSMOUNT=${BSMOUNT:-/usr/local/bin/bsmount}
mp="/run/bsmount/${SLURM_JOB_ID:?}"
[ -d "$mp" ] || exit 0
"$BSMOUNT" unmount "$mp" || umount -l "$mp" || true
rmdir "$mp" 2>/dev/null || true
exit 0
