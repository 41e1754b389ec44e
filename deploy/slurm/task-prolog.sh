#!/usr/bin/env bash
# Slurm TaskProlog (slurm.conf: TaskProlog=/etc/slurm/bsmount-task-prolog.sh): tells each job
# step where its BaseSpace mount is.
mp="/run/bsmount/${SLURM_JOB_ID:?}"
mountpoint -q "$mp" && echo "export BASESPACE_MOUNT=$mp"
exit 0
