"""Pictures of the augmented views a method trains on: ``medssl data inspect --recipe`` and every run.

One row per image: the preprocessed input, then each view the method's ``view_transform()`` made of it
(``view_0``/``view_1``; DINO ``global_*``/``local_*``; JCL ``view_full``/``view_small``), all windowed to
the input's intensity range so that intensity augmentations show. 3D shows the middle slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from medssl.evaluation.figures import as_numpy, display_plane, grid, save_png, to_rgb
from medssl.loggers import log_image


def view_keys(sample: Mapping[str, Any], *, batched: bool = False) -> list[str]:
    """Keys of ``sample`` holding images (``(C, *spatial)``, or ``(B, C, *spatial)`` when ``batched``)."""
    least = 4 if batched else 3
    return [k for k, v in sample.items() if isinstance(v, Tensor | np.ndarray) and v.ndim >= least]


def views_figure(
    samples: Sequence[Mapping[str, Any]],
    *,
    inputs: Sequence[Any] | None = None,
    file_axes: bool = True,
    captions: Sequence[str] | None = None,
    tile: int = 96,
) -> np.ndarray:
    """An RGB grid: row i = ``inputs[i]`` (if given) followed by the views of ``samples[i]``."""
    keys = view_keys(samples[0])
    rows, row_captions = [], []
    for i, sample in enumerate(samples):
        planes = [display_plane(sample[k], file_axes=file_axes) for k in keys]
        source = display_plane(inputs[i], file_axes=file_axes) if inputs is not None else None
        reference = source if source is not None else np.concatenate([p.ravel() for p in planes])
        low, high = np.nanpercentile(reference, (0.5, 99.5))
        tiles = [to_rgb(p, float(low), float(high)) for p in planes]
        rows.append(([to_rgb(source, float(low), float(high))] if source is not None else []) + tiles)
        caption = captions[i] if captions else ""
        row_captions.append([caption] + [""] * len(keys))
    labels = (["input"] if inputs is not None else []) + keys
    return grid(rows, col_labels=labels, captions=row_captions if captions else None, tile=tile)


class ViewsFigure(pl.Callback):
    """Save the views of the first training batch to ``<run dir>/views/step_XXXXXX.png`` and log them.

    Runs once per ``fit`` (on rank 0), so every run, and every resumed run, shows what it trained on.
    """

    def __init__(self, num_images: int = 4, folder: str = "views") -> None:
        self.num_images, self.folder = num_images, folder
        self.path: Path | None = None
        self._done = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._done = False

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._done or not trainer.is_global_zero or not isinstance(batch, Mapping):
            return
        self._done = True
        keys = view_keys(batch, batched=True)
        if not keys:
            return
        count = min(self.num_images, len(batch[keys[0]]))
        samples = [{k: as_numpy(batch[k][i]) for k in keys} for i in range(count)]
        with torch.no_grad():
            rgb = views_figure(samples, file_axes=reads_files(trainer))
        name = f"step_{trainer.global_step:06d}.png"
        self.path = save_png(rgb, Path(trainer.default_root_dir) / self.folder / name)
        log_image(trainer, f"train/{self.folder}", rgb)


def reads_files(trainer: pl.Trainer) -> bool:
    """Whether the run's DataModule reads files (``(x, y[, z])`` axes) rather than MedMNIST arrays."""
    items = getattr(getattr(trainer, "datamodule", None), "items", None)
    if not callable(items):
        return True
    found = items()  # (train, val) when pretraining, {split: items} when fine-tuning
    groups = found.values() if isinstance(found, Mapping) else found
    first = next((group[0] for group in groups if group), None)
    return first is None or isinstance(first.get("image"), str)
