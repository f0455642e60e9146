"""Labelled images for classification fine-tuning: patient-level train/val/test, label fractions, sampling."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from monai.data import DataLoader
from monai.transforms import Compose, EnsureTyped, RandFlipd, RandScaleIntensityd, RandShiftIntensityd
from torch.utils.data import Dataset

from medssl.data.caching import CacheMode, check_fits, estimate_bytes, make_dataset
from medssl.data.datalist import Item, load_datalist
from medssl.data.fractions import case_ids, select_label_fraction, stratum
from medssl.data.paths import resolve_source
from medssl.data.preprocess import check_channels, persistent_dir, preprocess_transform
from medssl.data.resumable import DataOrder, check_repeats
from medssl.data.splits import split_train_val
from medssl.data.validation import SKIP_HINT, DatalistError, Problem, check_datalist, format_report

log = logging.getLogger("medssl.data")
SPLITS = ("train", "val", "test")


class ClassificationDataModule(pl.LightningDataModule):
    """Images with class labels, 2D or 3D, for ``ClassificationModule``.

    Splits: the source's own ``test`` items (MedMNIST's test split), else a fixed patient-level hold-out of
    ``test_fraction`` drawn with ``test_seed``, which does not change with ``seed`` or ``label_fraction``.
    Validation: the source's ``val`` items, else ``val_fraction`` of the remaining patients (``seed``).
    Then ``label_fraction`` of the training patients are kept, stratified by class (``seed``). The case
    ids of each split are logged and written to ``<default_root_dir>/splits.json``. The test split is
    only read by ``trainer.test``.

    Labels: an int class index, a class name (mapped to indices in sorted order), or for ``multi_label`` a
    0/1 list of ``num_classes`` entries. Unlabelled items are left out.

    Args:
        source: a CSV / JSON datalist with a ``label`` column, or a MedMNIST ``.npz``; ``$VARS`` expanded.
        spatial_dims: 2 or 3.
        in_channels: image channels after loading.
        num_classes: number of classes (outputs of the head); linked to the model.
        multi_label: labels are 0/1 vectors (independent classes) rather than one class index.
        intensity: modality preset (``medssl.transforms.intensity.INTENSITY_PRESETS``).
        ct_window: HU window for ``intensity: ct``.
        spacing: resample 3D volumes to this voxel spacing (mm).
        spatial_size: centre pad or crop every image to this size.
        label_fraction: share of the training patients used, e.g. 0.01, 0.1, 1.0.
        balanced_sampling: draw training images with probability inverse to their class frequency.
        flip_prob: training only: probability of a flip along each spatial axis (0 for none).
        intensity_jitter: training only: random intensity scale and shift up to this amount (0 for none).
        batch_size: images per batch.
        num_workers: data-loading worker processes.
        repeats: passes over the training images per epoch, each with new random views; for a few images
            (one batch per epoch) so the loader can prepare batches ahead.
        cache: ``none``, ``memory`` or ``disk`` for the deterministic preprocessing.
        cache_dir: folder for ``cache: disk``.
        val_fraction: share of patients held out for validation when the source has no ``val`` items.
        test_fraction: share of patients held out for testing when the source has no ``test`` items.
        test_seed: seed of that hold-out; keep it fixed to compare runs.
        limit: at most this many images of each of the source's splits (seeded), for a quick trial.
        skip_bad: drop entries that fail the checks instead of stopping.
        check_content: read every image once before training to catch NaN / Inf voxels and constant
            images; false keeps only the cheap header checks (very large datasets).
        seed: seed of the validation split, the label fraction and ``limit``.
    """

    def __init__(
        self,
        *,
        source: str,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        multi_label: bool = False,
        intensity: str = "minmax",
        ct_window: str | tuple[float, float] = "soft_tissue",
        spacing: Sequence[float] | None = None,
        spatial_size: Sequence[int] | None = None,
        label_fraction: float = 1.0,
        balanced_sampling: bool = False,
        flip_prob: float = 0.5,
        intensity_jitter: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 2,
        repeats: int = 1,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        test_seed: int = 0,
        limit: int | None = None,
        skip_bad: bool = False,
        check_content: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_classes < 2 and not multi_label:
            raise ValueError(f"num_classes must be >= 2 for multi-class labels, got {num_classes}")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        self.save_hyperparameters()
        self.source = source
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.intensity = intensity
        self.ct_window = ct_window
        self.spacing = tuple(spacing) if spacing else None
        self.spatial_size = tuple(spatial_size) if spatial_size else None
        self.label_fraction = label_fraction
        self.balanced_sampling = balanced_sampling
        self.flip_prob = flip_prob
        self.intensity_jitter = intensity_jitter
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.repeats = check_repeats(repeats)
        self.cache = cache
        self.cache_dir = cache_dir
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.test_seed = test_seed
        self.limit = limit
        self.skip_bad = skip_bad
        self.check_content = check_content
        self.seed = seed
        self.class_names: list[str] | None = None
        self.sets: dict[str, Dataset] = {}
        self.order = DataOrder(seed)  # training order and augmentations continue exactly on resume
        self._splits: dict[str, list[Item]] | None = None

    # --- items -------------------------------------------------------------------------------
    def items(self) -> dict[str, list[Item]]:
        """Load, check, encode and split the datalist once; raises ``DatalistError`` before any training."""
        if self._splits is None:
            path = resolve_source(self.source)
            items = self._encode([i for i in load_datalist(path) if "label" in i], path)
            if self.limit is not None:
                items = [
                    i for name in (*SPLITS, None) for i in self._limit(_of_split(items, name), self.limit)
                ]
            items = check_datalist(
                items,
                spatial_dims=self.spatial_dims,
                keys=("image",),
                skip_bad=self.skip_bad,
                source=str(path),
                content=self.check_content,
            )
            self._splits = self._split(items)
            check_channels(self.preprocess(), self._splits["train"][0], self.in_channels, str(path))
            for name, split in self._splits.items():
                counts = dict(sorted(self._counts(split).items()))
                log.info("%s: %s %d images, per class %s", path, name, len(split), counts)
        return self._splits

    def class_counts(self) -> list[int]:
        """Training images per class (multi-label: positives per class)."""
        counts = self._counts(self.items()["train"])
        return [counts.get(c, 0) for c in range(self.num_classes)]

    def _encode(self, items: list[Item], path: Path) -> list[Item]:
        """Labels as class indices (or 0/1 lists); every bad label is reported at once (or, with
        ``skip_bad``, its item dropped)."""
        if not items:
            raise DatalistError([Problem(str(path), "no item has a label; classification needs labels", "")])
        counts = Counter(i["label"] for i in items if isinstance(i["label"], str))
        names = sorted(counts)
        unknown: set[str] = set()
        if names and not self.multi_label and len(names) > self.num_classes:
            # more class names than classes: the rarest ones are the unknown values (typos, stray labels)
            unknown = set(sorted(names, key=lambda n: (-counts[n], n))[self.num_classes :])
            names = [n for n in names if n not in unknown]
        if names and not self.multi_label:
            self.class_names = names
            log.info("class names -> indices: %s", {n: c for c, n in enumerate(names)})
        problems, out = [], []
        for index, item in enumerate(items):
            label = names.index(item["label"]) if item["label"] in names else item["label"]
            if isinstance(item["label"], str) and item["label"] in unknown:
                reason: str | None = (
                    f"label {item['label']!r} is not one of the num_classes={self.num_classes} class names "
                    f"the other labels use ({', '.join(names)})"
                )
            else:
                reason = self._label_problem(label)
            where = str(item["image"]) if isinstance(item["image"], str) else f"{path} item {index}"
            if reason:
                problems.append(Problem(where, reason, "label"))
            else:
                out.append({**item, "label": label})
        if problems and (not self.skip_bad or not out):
            raise DatalistError(problems, str(path), SKIP_HINT if out else "")
        if problems:
            hint = f"Dropped {len(problems)} of {len(items)} items (skip_bad)."
            log.warning(format_report(problems, source=str(path), hint=hint))
        return out

    def _label_problem(self, label: Any) -> str | None:
        k = self.num_classes
        if self.multi_label:
            ok = isinstance(label, list) and len(label) == k and all(v in (0, 1) for v in label)
            return (
                None if ok else f"label {label!r} is not a 0/1 list of num_classes={k} entries (multi_label)"
            )
        if isinstance(label, int) and 0 <= label < k:
            return None
        hint = " (a list: set multi_label true?)" if isinstance(label, list) else ""
        return f"label {label!r} is not a class index in [0, {k}) for num_classes={k}{hint}"

    def _limit(self, items: list[Item], limit: int) -> list[Item]:
        if limit >= len(items):
            return items
        keep = np.random.default_rng(self.seed).choice(len(items), limit, replace=False)
        return [items[i] for i in sorted(keep)]

    def _split(self, items: list[Item]) -> dict[str, list[Item]]:
        test = _of_split(items, "test")
        rest = [i for i in items if i.get("split") != "test"]
        if not test:
            pool, test = split_train_val(
                _of_split(rest, "train", None), val_fraction=self.test_fraction, seed=self.test_seed
            )
            rest = pool + _of_split(rest, "val")
        train, val = split_train_val(rest, val_fraction=self.val_fraction, seed=self.seed)
        train = select_label_fraction(train, self.label_fraction, seed=self.seed)
        if not train or not val:
            raise DatalistError([Problem(str(self.source), "too few labelled patients for train + val", "")])
        return {"train": train, "val": val, "test": test}

    def _counts(self, items: Sequence[Item]) -> Counter:
        if self.multi_label:
            return Counter(c for i in items for c, v in enumerate(i["label"]) if v)
        return Counter(i["label"] for i in items)

    # --- transforms --------------------------------------------------------------------------
    def preprocess(self) -> Compose:
        """The deterministic, cacheable part (shared with pretraining)."""
        return preprocess_transform(
            spatial_dims=self.spatial_dims,
            intensity=self.intensity,
            ct_window=self.ct_window,
            spacing=self.spacing,
            spatial_size=self.spatial_size,
        )

    def augment(self) -> list:
        """Light, label-preserving training augmentation: flips and a small intensity jitter."""
        steps: list = []
        if self.flip_prob > 0:
            steps += [
                RandFlipd("image", prob=self.flip_prob, spatial_axis=a) for a in range(self.spatial_dims)
            ]
        if self.intensity_jitter > 0:
            steps += [
                RandScaleIntensityd("image", factors=self.intensity_jitter, prob=0.5),
                RandShiftIntensityd("image", offsets=self.intensity_jitter, prob=0.5),
            ]
        return steps

    # --- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits = self.items()
        names = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        names = tuple(n for n in names if n not in self.sets and splits[n])
        if not names:
            return
        head, cache = self.preprocess(), self.cache
        sample = head({"image": splits["train"][0]["image"]})
        where = self._cache_dir()
        check_fits(cache, estimate_bytes(sample, sum(len(splits[n]) for n in names)), where)
        for name in names:
            random = self.augment() if name == "train" else []
            # plain tensors: MetaTensor outputs would reach the logged values and the checkpoints
            transform = Compose([*head.transforms, *random, EnsureTyped("image", track_meta=False)])
            self.sets[name] = make_dataset(self._samples(splits[name]), transform, cache, where)
        self._write_splits()

    def train_dataloader(self) -> DataLoader:
        weights = self.balanced_weights() if self.balanced_sampling else None
        return self.order.loader(
            self.sets["train"],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            train=True,
            weights=weights,
            repeats=self.repeats,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order.load_state_dict(state_dict)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    # --- helpers -----------------------------------------------------------------------------
    def _samples(self, items: list[Item]) -> list[Item]:
        """What the dataset holds: the image and the label (multi-label as a float vector)."""
        if self.multi_label:
            return [{"image": i["image"], "label": np.asarray(i["label"], dtype=np.float32)} for i in items]
        return [{"image": i["image"], "label": i["label"]} for i in items]

    def eval_loader(self, name: str) -> DataLoader:
        """The ``name`` split in order, in batches, none dropped (set up first)."""
        if name not in self.sets:
            raise RuntimeError(f"the {name} split is empty or setup() was not run for it")
        return DataLoader(
            self.sets[name], batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )

    def balanced_weights(self) -> list[float]:
        """Each training image weighted by 1 / (images of its class); multi-label: of its stratum."""
        strata = [stratum(i["label"]) for i in self.items()["train"]]
        counts = Counter(strata)
        return [1.0 / counts[s] for s in strata]

    def _cache_dir(self) -> Path | None:
        if self.cache != "disk":
            return None
        keys = ("source", "spatial_dims", "intensity", "ct_window", "spacing", "spatial_size")
        return persistent_dir(self.cache_dir, {k: getattr(self, k) for k in keys}, prefix="cls-")

    def _write_splits(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "splits.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        splits = {name: case_ids(split) for name, split in self.items().items()}
        meta = {"label_fraction": self.label_fraction, "seed": self.seed}
        out.write_text(json.dumps({**meta, **splits}, indent=2) + "\n")


def _of_split(items: list[Item], *names: str | None) -> list[Item]:
    return [i for i in items if i.get("split") in names]
