"""Lightning callbacks that every pretraining run gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from medssl.export import write_weights
from medssl.export.metadata import file_sha256
from medssl.export.source import from_module

_DATA_SETTINGS = ("source", "intensity", "ct_window", "spacing", "spatial_size")


class SaveBackbone(pl.Callback):
    """At the end of fitting, export the backbone to ``<run dir>/weights`` (safetensors, medssl.json, README).

    Only here is the DataModule at hand, so this is where the data-manifest hash is computed; ``medssl
    export`` of the run reuses it.
    """

    def __init__(self, folder: str = "weights") -> None:
        self.folder = folder
        self.path: Path | None = None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(trainer, "fast_dev_run", False):
            return
        root = Path(trainer.default_root_dir)
        datamodule = getattr(trainer, "datamodule", None)
        pretrained = from_module(
            pl_module,
            data={key: getattr(datamodule, key, None) for key in _DATA_SETTINGS},
            images=_training_images(datamodule),
            recipe_sha256=file_sha256(root / "config.yaml"),
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
        )
        self.path = write_weights(pretrained, root / self.folder)


def _training_images(datamodule: Any) -> list[Any] | None:
    """The training items' images, or None when the DataModule cannot list them."""
    items = getattr(datamodule, "items", None)
    if not callable(items):
        return None
    train, _ = items()
    return [item["image"] for item in train]
