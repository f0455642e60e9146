"""What every training module shares about optimisation: which parameters skip weight decay, and the
per-step linear warm-up + cosine learning-rate schedule (lightly's ``CosineWarmupScheduler``)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import nn

#: Parameter names (substrings) that never get weight decay, besides biases and norm weights.
NO_DECAY_NAMES = ("position_embeddings", "pos_embed", "cls_token", "mask_token")


def skips_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights and embeddings get no weight decay."""
    return param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, trainer: pl.Trainer, *, warmup_epochs: float, min_lr_ratio: float
) -> dict[str, Any]:
    """Lightning ``lr_scheduler`` config: linear warm-up for ``warmup_epochs`` (fractions allowed), then a
    cosine decay to ``min_lr_ratio`` times the peak at the last optimiser step; stepped every step.

    The run may end by ``max_epochs`` or by ``max_steps``: either way an epoch of warm-up is one pass over
    the training loader, so a short fine-tune on 1 % of the labels warms up as long as one on all of them
    when both are counted in epochs."""
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = min(round(warmup_epochs * steps_per_epoch(trainer, total)), total - 1)
    scheduler = CosineWarmupScheduler(
        optimizer, warmup_epochs=warmup, max_epochs=total, end_value=min_lr_ratio
    )
    return {"scheduler": scheduler, "interval": "step"}


def steps_per_epoch(trainer: pl.Trainer, total: int) -> float:
    """Optimiser steps in one pass over the training loader (``total / max_epochs`` if it has no length)."""
    if trainer.train_dataloader is None:  # max_epochs -1: Lightning did not need the loader for `total`
        trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if isinstance(batches, int | float) and 0 < batches < float("inf"):
        return max(1.0, batches / trainer.accumulate_grad_batches)
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
    return total / epochs
