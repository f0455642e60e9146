"""Lightning callbacks that every pretraining run gets."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from medssl.export import save_backbone


class SaveBackbone(pl.Callback):
    """At the end of fitting, write the backbone weights to ``<run dir>/weights`` (safetensors + JSON)."""

    def __init__(self, folder: str = "weights") -> None:
        self.folder = folder
        self.path: Path | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(trainer, "fast_dev_run", False):
            return
        metadata = {
            "method": type(pl_module).__name__.lower(),
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
        }
        backbone = pl_module.backbone
        assert isinstance(backbone, nn.Module)
        self.path = save_backbone(backbone, Path(trainer.default_root_dir) / self.folder, metadata)
