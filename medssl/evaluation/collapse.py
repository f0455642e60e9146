"""Collapse monitor: is the backbone still producing diverse embeddings during pretraining?

- ``val/embedding_std``: mean per-dimension std of L2-normalised embeddings (lightly's
  ``std_of_l2_normalized``): about ``1/sqrt(D)`` when healthy, 0 when every image maps to one vector.
- ``val/effective_rank``: RankMe, the exponential of the entropy of the normalised singular values of the
  embedding matrix: up to ``min(N, D)`` when the embeddings span many directions, 1 when they lie on a line.

- [0]: SimSiam (embedding std), 2020, https://arxiv.org/abs/2011.10566
- [1]: RankMe, 2023, https://arxiv.org/abs/2210.02885
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.utils.debug import std_of_l2_normalized
from torch import Tensor, nn

log = logging.getLogger("medssl.evaluation")


def effective_rank(embeddings: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe of an ``(N, D)`` embedding matrix."""
    singular = torch.linalg.svdvals(embeddings.float())
    p = singular / singular.sum() + eps
    return torch.exp(-(p * p.log()).sum())


class CollapseMonitor(pl.Callback):
    """Embeds up to ``max_samples`` validation images with ``pl_module.backbone`` (the first view of each
    batch) and logs ``val/embedding_std`` and ``val/effective_rank`` once per validation epoch.

    Under DDP the embeddings of all ranks are gathered first, so both values describe the whole
    validation set (every rank embeds the same number of batches: the distributed sampler pads).

    The effective rank of N embeddings is at most N: with fewer than ``min_samples`` validation images it
    cannot tell collapse from health (2 images give about 1 either way), and the monitor says so once."""

    def __init__(self, max_samples: int = 1024, min_samples: int = 16) -> None:
        self.max_samples = max_samples
        self.min_samples = min_samples
        self._embeddings: list[Tensor] = []
        self._warned = False

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._embeddings = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        full = sum(len(e) for e in self._embeddings) >= self.max_samples
        if full or trainer.sanity_checking or not isinstance(batch, dict):  # no extra forward when unused
            return
        views = [
            batch[key] for key in sorted(batch) if isinstance(batch[key], Tensor) and batch[key].ndim >= 4
        ]
        backbone = getattr(pl_module, "backbone", None)
        if views and isinstance(backbone, nn.Module):
            with torch.no_grad():
                self._embeddings.append(backbone(views[0]).flatten(1).float())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._embeddings:
            return
        local = torch.cat(self._embeddings)  # (N, D) on this rank
        gathered = pl_module.all_gather(local)  # (ranks, N, D) under DDP, (N, D) otherwise
        assert isinstance(gathered, Tensor)
        embeddings = gathered.reshape(-1, local.shape[-1])[: self.max_samples]
        if len(embeddings) < self.min_samples and not self._warned and trainer.is_global_zero:
            log.warning(
                "collapse monitor: only %d validation images, and val/effective_rank is at most that many, "
                "so it cannot show collapse; hold out more (data.val_fraction), or compare train/loss with "
                "the no-learning reference the method logs beside it (README: 'Is it learning?')",
                len(embeddings),
            )
            self._warned = True
        if len(embeddings) < 2:
            return
        # the same on every rank after the gather: sync_dist averages equal values (Lightning asks for it)
        pl_module.log("val/embedding_std", std_of_l2_normalized(embeddings), sync_dist=True)
        pl_module.log("val/effective_rank", effective_rank(embeddings), sync_dist=True)
        self._embeddings = []
