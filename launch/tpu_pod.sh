#!/bin/bash
# Creates a Cloud TPU VM slice, installs mlmjax on every worker and trains on all of them.
#
#   bash launch/tpu_pod.sh TPU_NAME ZONE CONFIG gs://BUCKET/WORKDIR [overrides...]
#
# Needs the gcloud CLI, a project with TPU quota, and a bucket: the workdir (prepared data,
# tokenizer, checkpoints, logs) lives there, the only storage the workers share; each worker
# keeps only its share of the prepared rows on its own disk. Each worker runs one JAX process;
# mlmjax calls jax.distributed.initialize() (--distributed), which finds the other workers.
set -euo pipefail
TPU=${1:?TPU_NAME}; ZONE=${2:?ZONE}; CONFIG=${3:?CONFIG}; WORKDIR=${4:?gs://bucket/workdir}
shift 4
ACCELERATOR=${ACCELERATOR:-v5p-64}
VERSION=${VERSION:-v2-alpha-tpuv5}
REPO=${REPO:-$(git remote get-url origin 2>/dev/null || echo "")}

if ! gcloud compute tpus tpu-vm describe "$TPU" --zone="$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$VERSION"
fi

run_all() { gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$1"; }

# Install: the same revision of mlmjax on every worker, with JAX for TPU.
run_all "set -e; if [ ! -d mlmjax ]; then git clone $REPO mlmjax; fi; cd mlmjax && git pull -q;
  pip install -q -U 'jax[tpu]' -e '.[tfds,gcs]'"

# Train on every worker at once (same command, same workdir); rerun this script to resume.
run_all "cd mlmjax && mlmjax-train --config=$CONFIG --workdir=$WORKDIR --distributed $*"
