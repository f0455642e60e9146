#!/usr/bin/env bash
# Pretrain on one GPU (or the CPU) with mixed precision, from any recipe.
#
#   examples/launch/single_gpu.sh recipes/pretrain/simclr_resnet18_pneumoniamnist_2d.yaml [--key value ...]
#
# Environment: PRECISION (bf16-mixed; 16-mixed on GPUs without bf16, 32-true for full precision),
# ACCELERATOR (gpu; cpu works too), PYTHON (python). Extra arguments go to `medssl pretrain`, e.g.
# --trainer.accumulate_grad_batches 4 or --ckpt_path last to resume.
set -euo pipefail

recipe=${1:?usage: $0 <recipe.yaml> [medssl pretrain options]}
shift

exec "${PYTHON:-python}" -m medssl.cli pretrain --config "$recipe" \
    --trainer.accelerator "${ACCELERATOR:-gpu}" \
    --trainer.devices 1 \
    --trainer.precision "${PRECISION:-bf16-mixed}" \
    "$@"
