"""What a training step does with a NaN / Inf loss: stop with a clear message, or skip the batch and count it.

The check runs before the backward pass, so the weights never see a non-finite gradient, and no checkpoint
is written on the way out: ``last.ckpt`` stays the last good one. A skipped batch returns ``None`` from
``training_step``: Lightning then runs no backward pass, the optimiser finds no gradient and leaves every
weight as it was (the step counter and the learning-rate schedule still advance). Under DDP every rank
takes the same decision (any rank's bad loss skips or stops them all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

NanPolicy = Literal["stop", "skip"]
NAN_POLICIES = ("stop", "skip")

#: Even with ``skip``, this many non-finite losses in a row stop the run: it diverged (not one bad batch).
MAX_CONSECUTIVE_SKIPS = 20


class DivergenceError(RuntimeError):
    """Training stopped on a non-finite loss; the message says where, which terms, and what to try."""

    exit_code = 1


class LossGuard:
    """Applies a ``NanPolicy`` to the loss terms of each training step and counts skipped batches."""

    def __init__(self, policy: NanPolicy = "stop") -> None:
        if policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}, got {policy!r}")
        self.policy = policy
        self.skipped = 0
        self.consecutive = 0

    def check(self, module: pl.LightningModule, losses: dict[str, Tensor]) -> Tensor | None:
        """``losses["loss"]`` when finite; ``None`` (Lightning then skips the step) or raise when not."""
        loss = losses["loss"]
        bad = not bool(torch.isfinite(loss.detach()).all())
        bad = bool(module.trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            self.consecutive = 0
            self._log(module)
            return loss
        if self.policy == "skip" and self.consecutive + 1 < MAX_CONSECUTIVE_SKIPS:
            self.skipped += 1
            self.consecutive += 1
            self._log(module)
            return None
        raise DivergenceError(self._message(module, losses))

    def _log(self, module: pl.LightningModule) -> None:
        if self.policy == "skip":
            module.log("train/skipped_batches", float(self.skipped), on_step=True, on_epoch=False)

    def _message(self, module: pl.LightningModule, losses: dict[str, Tensor]) -> str:
        trainer = module.trainer
        bad_terms = [
            f"{name}={value.detach().float().mean().item():g}"
            for name, value in losses.items()
            if not bool(torch.isfinite(value.detach()).all())
        ]
        where = (
            f"at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {trainer.fit_loop.epoch_loop.batch_progress.current.ready})"
        )
        what = "the loss is not finite" if not bad_terms else f"non-finite loss terms: {', '.join(bad_terms)}"
        if self.policy == "skip":
            what += f"; {MAX_CONSECUTIVE_SKIPS} batches in a row"
        last = _last_checkpoint(trainer)
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint had been written yet"
        return (
            f"training diverged {where}: {what}. Nothing was saved from this step; {kept}. "
            "Try a lower learning rate, check the data for extreme values, or skip such batches with "
            "the model option nan_policy: skip."
        )


def _last_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback is not None else ""
    return path if path and Path(path).is_file() else None
