"""Segmentation overlays during fine-tuning: rows image / ground truth / prediction, one column per image.

After each validation epoch (rank 0, not the sanity check) the first images of the first validation batch
are drawn with their masks and the model's argmax prediction in class colours, saved to
``<run dir>/overlays/epoch_XXX.png`` and logged to the loggers that take images (TensorBoard, MLflow).
3D shows the slice where the ground truth has the most foreground.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from medssl.evaluation.figures import as_numpy, display_plane, grid, overlay, save_png, slice_axis, to_rgb
from medssl.evaluation.views import reads_files
from medssl.loggers import log_image

ROWS = ("image", "ground truth", "prediction")


def overlay_figure(
    images: Any, masks: Any, preds: Any, *, file_axes: bool = True, tile: int = 128
) -> np.ndarray:
    """``(N, C, *S)`` images and ``(N, 1, *S)`` label maps as an RGB grid (rows ``ROWS``)."""
    images, masks, preds = as_numpy(images), as_numpy(masks), as_numpy(preds)
    columns = []
    for image, mask, pred in zip(images, masks, preds, strict=True):
        index = _busiest_slice(mask, file_axes=file_axes)
        plane = to_rgb(display_plane(image, file_axes=file_axes, index=index))
        labels = [display_plane(m, file_axes=file_axes, index=index) for m in (mask, pred)]
        columns.append([plane, overlay(plane, labels[0]), overlay(plane, labels[1])])
    rows = [list(row) for row in zip(*columns, strict=True)]
    return grid(rows, row_labels=ROWS, tile=tile)


def _busiest_slice(mask: np.ndarray, *, file_axes: bool) -> int | None:
    """For 3D, the slice with the most foreground (None: the middle one when there is none)."""
    if mask.ndim != 4:
        return None
    axis = slice_axis(3, file_axes=file_axes)
    per_slice = (mask > 0).sum(axis=tuple(a for a in range(4) if a != axis))
    return int(per_slice.argmax()) if per_slice.any() else None


class SegmentationOverlay(pl.Callback):
    """Save and log overlays of the first validation batch once per validation epoch.

    Expects ``validation_step`` to return ``{"pred": (B, 1, *S)}`` and the batch to hold ``image`` and
    ``mask``, as ``medssl.finetune.segmentation.SegmentationModule`` does.
    """

    def __init__(self, num_images: int = 4, folder: str = "overlays") -> None:
        self.num_images, self.folder = num_images, folder
        self._figure: tuple[Any, Any, Any] | None = None
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._figure = None

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._figure is not None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not isinstance(outputs, Mapping) or "pred" not in outputs:
            return
        n = self.num_images
        self._figure = (batch["image"][:n].detach(), batch["mask"][:n].detach(), outputs["pred"][:n].detach())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._figure is None:
            return
        rgb = overlay_figure(*self._figure, file_axes=reads_files(trainer))
        self._figure = None
        path = Path(trainer.default_root_dir) / self.folder / f"epoch_{trainer.current_epoch:03d}.png"
        self.last_path = save_png(rgb, path)
        log_image(trainer, f"val/{self.folder}", rgb)
