#!/usr/bin/env bash
# Pretrain on all GPUs of one machine with DDP, one process per GPU started by torchrun.
#
#   GPUS=4 examples/launch/multi_gpu_torchrun.sh recipes/pretrain/moco_resnet18_hippocampus_3d.yaml [--key value ...]
#
# data.batch_size is per GPU: the global batch is GPUS x batch_size, and SimCLR / MoCo / JCL negatives,
# the MoCo queue and the DINO centre are gathered over all GPUs. BatchNorm statistics are synchronised
# (SYNC_BN=true); turn it off for ViTs (no BatchNorm) to save the all-reduce. Environment: GPUS (all
# visible GPUs), PRECISION (bf16-mixed), SYNC_BN (true), PYTHON (python). Extra arguments go to
# `medssl pretrain`, e.g. --ckpt_path last to resume.
set -euo pipefail

recipe=${1:?usage: $0 <recipe.yaml> [medssl pretrain options]}
shift
gpus=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
if [[ "$gpus" -lt 1 ]]; then
    echo "$0: no GPU found; set GPUS=<number of GPUs>" >&2
    exit 2
fi

exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node "$gpus" \
    -m medssl.cli pretrain --config "$recipe" \
    --trainer.accelerator gpu \
    --trainer.devices "$gpus" \
    --trainer.strategy ddp \
    --trainer.sync_batchnorm "${SYNC_BN:-true}" \
    --trainer.precision "${PRECISION:-bf16-mixed}" \
    "$@"
