"""LightningDataModule for pretraining: datalist -> checked -> split -> cached preprocessing -> views."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from monai.data import DataLoader
from monai.transforms import Compose

from medssl.data.caching import CacheMode, check_fits, estimate_bytes, make_dataset
from medssl.data.datalist import Item, load_datalist
from medssl.data.paths import resolve_source
from medssl.data.preprocess import check_channels, persistent_dir, preprocess_transform
from medssl.data.resumable import DataOrder, check_repeats
from medssl.data.splits import split_train_val
from medssl.data.validation import check_datalist

log = logging.getLogger("medssl.data")


class PretrainDataModule(pl.LightningDataModule):
    """Unlabelled images for SSL pretraining, in 2D or 3D.

    The views come from the method (``method.view_transform()``), picked up in ``setup`` from the
    trainer's LightningModule, or set by hand on ``view_transform``.

    Args:
        source: a folder, CSV, JSON datalist, Decathlon ``dataset.json`` or MedMNIST ``.npz``;
            ``$MEDSSL_DATA_DIR`` and ``~`` are expanded.
        spatial_dims: 2 or 3; every image must have this many spatial axes.
        in_channels: channels every image must have after loading (1 grey, 3 colour).
        intensity: modality preset (``medssl.transforms.intensity.INTENSITY_PRESETS``).
        ct_window: HU window for ``intensity: ct``: a name or ``(lower, upper)``.
        spacing: resample 3D volumes to this voxel spacing (mm); ``None`` keeps the native grid.
        spatial_size: centre pad or crop every image to this size before caching; ``None`` keeps it.
        batch_size: images per batch (each gives the method's views).
        num_workers: data-loading worker processes.
        repeats: passes over the training images per epoch, each with new random views. For a small
            dataset (e.g. 20 fundus photographs): with one batch per epoch the loader workers cannot
            prepare the next batch while the model trains, and validation runs after every step.
        cache: ``none``, ``memory`` (RAM) or ``disk`` (``cache_dir``); the size is checked first.
        cache_dir: folder for ``cache: disk``; default ``$MEDSSL_CACHE_DIR/persistent``.
        val_fraction: share of patients (or images) held out for validation when the datalist has
            no ``split`` column.
        limit: use only this many images (a seeded random subset), e.g. for a quick trial.
        skip_bad: drop entries that fail the checks (and log them) instead of stopping.
        check_content: read every image once before training to catch NaN / Inf voxels and constant
            images; false keeps only the cheap header checks (very large datasets).
        seed: seed of the split and of ``limit``.
    """

    def __init__(
        self,
        *,
        source: str,
        spatial_dims: int = 2,
        in_channels: int = 1,
        intensity: str = "minmax",
        ct_window: str | tuple[float, float] = "soft_tissue",
        spacing: Sequence[float] | None = None,
        spatial_size: Sequence[int] | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        repeats: int = 1,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        val_fraction: float = 0.05,
        limit: int | None = None,
        skip_bad: bool = False,
        check_content: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.source = source
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.intensity = intensity
        self.ct_window = ct_window
        self.spacing = tuple(spacing) if spacing else None
        self.spatial_size = tuple(spatial_size) if spatial_size else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.repeats = check_repeats(repeats)
        self.cache = cache
        self.cache_dir = cache_dir
        self.val_fraction = val_fraction
        self.limit = limit
        self.skip_bad = skip_bad
        self.check_content = check_content
        self.seed = seed
        self.view_transform: Callable | None = None
        self.order = DataOrder(seed)  # data order and augmentations continue exactly on resume
        self._splits: tuple[list[Item], list[Item]] | None = None

    # --- items -------------------------------------------------------------------------------
    def items(self) -> tuple[list[Item], list[Item]]:
        """Load, check and split the datalist once; raises ``DatalistError`` before any training."""
        if self._splits is None:
            path = resolve_source(self.source)
            items = [i for i in load_datalist(path) if i.get("split") != "test"]
            if self.limit is not None and self.limit < len(items):
                keep = np.random.default_rng(self.seed).choice(len(items), self.limit, replace=False)
                items = [items[i] for i in sorted(keep)]
            items = check_datalist(
                items,
                spatial_dims=self.spatial_dims,
                keys=("image",),
                skip_bad=self.skip_bad,
                source=str(path),
                content=self.check_content,
            )
            check_channels(self.preprocess(), items[0], self.in_channels, self.source)
            self._splits = split_train_val(items, val_fraction=self.val_fraction, seed=self.seed)
            log.info("%s: %d train / %d val images", path, *map(len, self._splits))
        return self._splits

    def preprocess(self) -> Compose:
        """The deterministic, cacheable part: load, orient, resample, intensity preset, pad/crop."""
        return preprocess_transform(
            spatial_dims=self.spatial_dims,
            intensity=self.intensity,
            ct_window=self.ct_window,
            spacing=self.spacing,
            spatial_size=self.spatial_size,
        )

    # --- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        train, val = self.items()
        views = self.view_transform or self._views_from_trainer()
        transform = Compose([*self.preprocess().transforms, views])  # flat head: CacheDataset caches it
        cache_dir = self._persistent_dir()
        sample = self.preprocess()(dict(train[0]))
        check_fits(self.cache, estimate_bytes(sample, len(train) + len(val)), cache_dir)
        self.train_set = make_dataset(train, transform, self.cache, cache_dir)
        self.val_set = make_dataset(val, transform, self.cache, cache_dir) if val else None

    def train_dataloader(self) -> DataLoader:
        return self.order.loader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            train=True,
            repeats=self.repeats,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        batch_size, workers = min(self.batch_size, len(self.val_set)), self.num_workers
        return self.order.loader(self.val_set, batch_size=batch_size, num_workers=workers, train=False)

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order.load_state_dict(state_dict)

    # --- helpers -----------------------------------------------------------------------------
    def _views_from_trainer(self) -> Callable:
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        if module is None or not hasattr(module, "view_transform"):
            raise RuntimeError(
                "no view transform: attach an SSL method via the Trainer or set .view_transform"
            )
        return module.view_transform()

    def _persistent_dir(self) -> Path | None:
        if self.cache != "disk":
            return None
        settings = [
            str(resolve_source(self.source)),
            self.spatial_dims,
            self.intensity,
            self.ct_window,
            self.spacing,
            self.spatial_size,
        ]
        return persistent_dir(self.cache_dir, settings)
