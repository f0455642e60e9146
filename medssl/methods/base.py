"""The one base class every SSL method subclasses: optimiser, schedule, loss logging, EMA updates.

A method only builds its heads and loss, declares its views (``view_transform``) and, if it has a
teacher or momentum encoder, its EMA pairs (``ema_pairs``). Everything else lives here, once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from lightly.models.utils import update_momentum
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from monai.transforms import Compose
from torch import Tensor, nn

from medssl.backbones import build_backbone
from medssl.ops.distributed import seed_rank
from medssl.optim import skips_decay, warmup_cosine
from medssl.registry import Registry
from medssl.reliability.divergence import LossGuard, NanPolicy

METHODS: Registry[type[SSLMethod]] = Registry("method")


class SSLMethod(pl.LightningModule):
    """Base of every SSL method.

    Args:
        backbone: registered backbone name (``medssl.backbones.list_backbones()``).
        backbone_kwargs: the backbone builder's own options, e.g. ``{"widen_factor": 0.5}``.
        spatial_dims: 2 or 3; linked from ``data.spatial_dims`` on the command line.
        in_channels: image channels; linked from ``data.in_channels`` on the command line.
        optimizer: ``adamw``, ``sgd`` (momentum 0.9) or ``lars`` (lightly's LARS).
        lr: peak learning rate, reached after the warm-up.
        weight_decay: decoupled weight decay; biases, norms and embeddings get none.
        warmup_epochs: linear warm-up length in epochs (fractions allowed); cosine decay afterwards.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        nan_policy: on a NaN / Inf loss, ``stop`` the run (``last.ckpt`` stays the last good one) or
            ``skip`` the batch: no weight or EMA update (the step counter and schedule still advance);
            counted in ``train/skipped_batches``; 20 in a row still stop the run.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        spatial_dims: int = 2,
        in_channels: int = 1,
        optimizer: Literal["adamw", "sgd", "lars"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        nan_policy: NanPolicy = "stop",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # plain containers: checkpoints load with weights_only, loggers can write them (hparams_initial)
        for hparams in (self.hparams, vars(self)["_hparams_initial"]):
            for key, value in list(hparams.items()):
                if dataclasses.is_dataclass(value) and not isinstance(value, type):
                    hparams[key] = dataclasses.asdict(value)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.backbone = build_backbone(
            backbone, spatial_dims=spatial_dims, in_channels=in_channels, **(backbone_kwargs or {})
        )
        self._in_step = False
        self.loss_guard = LossGuard(nan_policy)

    # --- what a method provides -------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Return named loss terms and their weighted sum under ``"loss"``."""
        raise NotImplementedError

    def view_transform(self) -> Compose:
        """The MONAI transform turning ``{"image": (C, *spatial)}`` into this method's views."""
        raise NotImplementedError

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(online, ema)`` module pairs updated after every optimiser step; none by default."""
        return []

    def ema_momentum(self) -> float:
        """Momentum for the EMA update after step number ``steps_taken`` (1 after the first step)."""
        return 0.996

    @property
    def pretrained_decoder_blocks(self) -> int:
        """Decoder blocks (coarse to fine) this method trains; 0 for encoder-only methods."""
        return 0

    # --- shared machinery -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What an export needs to know without rebuilding the method (checkpoints hold no code).
        checkpoint["medssl"] = {
            "method": METHODS.name_of(type(self)),
            "pretrained_decoder_blocks": self.pretrained_decoder_blocks,
            "skipped_batches": self.loss_guard.skipped,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loss_guard.skipped = int(checkpoint.get("medssl", {}).get("skipped_batches", 0))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        losses = self.compute_loss(batch)
        loss = self.loss_guard.check(self, losses)  # None: a non-finite loss skipped (nan_policy skip)
        if loss is not None:
            self._log_losses("train", losses, batch)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log_losses("val", self.compute_loss(batch), batch)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:  # before the dataloaders exist: their augmentations differ per rank
            seed_rank(self.trainer.global_rank)

    def on_train_start(self) -> None:
        # A resumed run may train longer than the one that saved the checkpoint: end the cosine there.
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, CosineWarmupScheduler):
                config.scheduler.max_epochs = max(1, int(self.trainer.estimated_stepping_batches))

    @property
    def steps_taken(self) -> int:
        """Optimiser steps taken, counting the one whose EMA update is running."""
        return self.trainer.global_step + int(self._in_step)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Lightning calls this on real optimiser steps only (not on accumulation-only batches). The EMA
        # update happens here, inside the step, so that any checkpoint written after it (a callback's
        # on_train_batch_end runs before this module's) holds the updated teacher.
        super().optimizer_step(*args, **kwargs)
        if self.loss_guard.consecutive:  # a skipped (non-finite) batch: the online weights did not move
            return
        self._in_step = True
        try:
            momentum = self.ema_momentum()
            for online, ema in self.ema_pairs():
                update_momentum(online, ema, m=momentum)
        finally:
            self._in_step = False

    def configure_optimizers(self) -> Any:
        optimizer = self._build_optimizer()
        schedule = warmup_cosine(
            optimizer,
            self.trainer,
            warmup_epochs=self.hparams["warmup_epochs"],
            min_lr_ratio=self.hparams["min_lr_ratio"],
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _build_optimizer(self) -> torch.optim.Optimizer:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            plain = skips_decay(name, param)
            (no_decay if plain else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        lr = self.hparams["lr"]
        if self.hparams["optimizer"] == "adamw":
            return torch.optim.AdamW(groups, lr=lr)
        if self.hparams["optimizer"] == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=0.9)
        return LARS(groups, lr=lr, momentum=0.9)

    def _log_losses(self, stage: str, losses: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        batch_size = next(v for v in batch.values() if isinstance(v, Tensor)).shape[0]
        on_step = stage == "train"
        for name, value in losses.items():  # sync_dist: epoch values are means over all ranks' batches
            key = f"{stage}/loss" if name == "loss" else f"{stage}/loss_{name}"
            self.log(
                key,
                value.detach(),
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=True,
            )
