"""Segmentation data: image + mask pairs, patient-level train/val/test splits, label fractions, patches.

Sources (``source``): a Decathlon folder or ``dataset.json``, a CSV with ``image`` and ``mask`` columns, a
JSON datalist, or a folder in one of the known paired layouts (see ``PAIRED_LAYOUTS``), e.g.
``${MEDSSL_DATA_DIR}/msd_hippocampus`` (``images/`` + ``labels/``) or ``${MEDSSL_DATA_DIR}/DRIVE``
(``{training,test}/images`` + ``1st_manual`` + FOV ``mask``). An optional ``fov`` item key holds a
field-of-view mask: pixels outside it are ignored by the metrics (see ``SegmentationModule``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from monai.data import DataLoader
from monai.transforms import (
    AsDiscreted,
    Compose,
    MapLabelValued,
    RandCropByPosNegLabeld,
    RandFlipd,
    Spacingd,
    SpatialPadd,
)

from medssl.data.caching import CacheMode, check_fits, estimate_bytes, make_dataset
from medssl.data.content import MaskRules
from medssl.data.datalist import Item, load_datalist
from medssl.data.fractions import select_label_fraction
from medssl.data.paths import cache_dir, resolve_source
from medssl.data.preprocess import to_ras
from medssl.data.readers import IMAGE_SUFFIXES, LoadItemd, has_suffix
from medssl.data.resumable import DataOrder, check_repeats
from medssl.data.splits import split_train_val
from medssl.data.validation import DatalistError, Problem, check_datalist
from medssl.transforms.intensity import intensity_transform

log = logging.getLogger("medssl.data")

#: Folder layouts ``source`` may point at: (images, masks, field of view or None, split or None).
PAIRED_LAYOUTS: list[tuple[str, str, str | None, str | None]] = [
    ("images", "labels", None, None),  # MSD task folder as shipped here (Hippocampus)
    ("imagesTr", "labelsTr", None, None),  # MSD task folder without its dataset.json
    ("training/images", "training/1st_manual", "training/mask", "train"),  # DRIVE
    ("test/images", "test/1st_manual", "test/mask", "test"),  # DRIVE's official test set
]
SPLIT_NAMES = ("train", "val", "test")


def paired_folders(
    images_dir: str | Path,
    masks_dir: str | Path,
    fov_dir: str | Path | None = None,
    *,
    split: str | None = None,
) -> list[Item]:
    """Items ``{"image", "mask"[, "fov"], "patient_id"[, "split"]}`` pairing files by case id.

    The case id is the file name without its image suffix when every image has a mask of the same name
    (MSD: ``images/hippocampus_001.nii.gz`` + ``labels/hippocampus_001.nii.gz``); otherwise the first number
    in the name (DRIVE: ``21_training.tif`` + ``21_manual1.gif`` + ``21_training_mask.gif`` are case ``21``).
    One case is taken as one patient.
    """
    images = _image_files(Path(images_dir))
    masks = _match(images, _image_files(Path(masks_dir)), Path(masks_dir))
    fovs = _match(images, _image_files(Path(fov_dir)), Path(fov_dir)) if fov_dir is not None else {}
    items = []
    for case, image in images.items():
        item: Item = {"image": str(image), "mask": str(masks[case]), "patient_id": case}
        if case in fovs:
            item["fov"] = str(fovs[case])
        if split:
            item["split"] = split
        items.append(item)
    return items


def segmentation_datalist(source: str | Path) -> list[Item]:
    """Items of ``source``: a paired-folder layout (``PAIRED_LAYOUTS``) or what ``load_datalist`` reads."""
    path = resolve_source(source)
    if path.is_dir() and not (path / "dataset.json").is_file():
        items = [
            item
            for images, masks, fov, split in PAIRED_LAYOUTS
            if (path / images).is_dir() and (path / masks).is_dir()
            for item in paired_folders(
                path / images,
                path / masks,
                path / fov if fov and (path / fov).is_dir() else None,
                split=split,
            )
        ]
        if items:
            return items
        known = "; ".join(f"{i}/ + {m}/" for i, m, _, _ in PAIRED_LAYOUTS)
        raise DatalistError(
            [Problem(str(path), f"no image/mask folder pair found; known layouts: {known}", "")]
        )
    return load_datalist(path)


class SegmentationDataModule(pl.LightningDataModule):
    """Image + mask pairs for segmentation fine-tuning, 2D or 3D.

    Splits: the source's own ``test`` items with masks (DRIVE's test folder), else a fixed patient-level
    hold-out of ``test_fraction`` drawn with ``test_seed`` (independent of ``seed``, so it never changes
    across seeds or label fractions). Validation: the source's ``val`` items, else ``val_fraction`` of the
    remaining patients (``seed``). Then ``label_fraction`` of the training patients are kept (``seed``). The
    case ids of each split are logged and written to ``<default_root_dir>/splits.json``.

    Training draws ``samples_per_image`` random patches of ``patch_size`` per image, centred on foreground
    and background at ``pos:neg``, with random flips. Validation and test batches are whole images (batch
    size 1), for sliding-window inference in the module.

    Args:
        source: see the module docstring; ``$MEDSSL_DATA_DIR`` and ``~`` are expanded.
        spatial_dims: 2 or 3.
        in_channels: image channels after loading (1 grey, 3 colour fundus).
        num_classes: classes including background; mask values must be ``0 .. num_classes - 1`` after
            ``label_map`` / ``mask_threshold`` (checked on the first case before training).
        patch_size: training patch (and the module's sliding-window ROI).
        intensity: modality preset (``medssl.transforms.intensity.INTENSITY_PRESETS``).
        ct_window: HU window for ``intensity: ct``.
        spacing: resample 3D volumes to this spacing (mm); masks use nearest neighbour.
        mask_threshold: mask values ``>= mask_threshold`` become 1, the rest 0 (DRIVE's 0/255 GIFs: 128).
        label_map: map mask values ``{from: to}`` (e.g. ``{255: 1}``); applied before the checks.
        batch_size: images per training batch (each gives ``samples_per_image`` patches).
        samples_per_image: patches cropped from each training image per visit.
        pos: relative weight of foreground-centred patches.
        neg: relative weight of background-centred patches.
        flip_prob: probability of a flip along each spatial axis.
        label_fraction: share of training patients used (``medssl.data.fractions.select_label_fraction``).
        val_fraction: share of patients held out for validation when the source has no ``val`` items.
        test_fraction: share of patients held out for testing when the source has no labelled ``test`` items.
        test_seed: seed of that hold-out; keep it fixed to compare runs.
        num_workers: data-loading worker processes.
        repeats: passes over the training images per epoch, each with new random views; for a few images
            (one batch per epoch) so the loader can prepare batches ahead.
        cache: ``none``, ``memory`` or ``disk`` for the deterministic preprocessing.
        cache_dir: folder for ``cache: disk``.
        limit: use only the first ``limit`` labelled cases of each of the source's splits, for a quick trial.
        skip_bad: drop entries that fail the checks instead of stopping.
        check_content: read every image once before training to catch NaN / Inf voxels and constant
            images (and mask values outside the classes); false keeps only the cheap header checks
            (very large datasets).
        seed: seed of the validation split and the label fraction.
    """

    def __init__(
        self,
        *,
        source: str,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        patch_size: Sequence[int] = (96, 96, 96),
        intensity: str = "minmax",
        ct_window: str | tuple[float, float] = "soft_tissue",
        spacing: Sequence[float] | None = None,
        mask_threshold: float | None = None,
        label_map: dict[int, int] | None = None,
        batch_size: int = 2,
        samples_per_image: int = 2,
        pos: float = 1.0,
        neg: float = 1.0,
        flip_prob: float = 0.5,
        label_fraction: float = 1.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        test_seed: int = 0,
        num_workers: int = 2,
        repeats: int = 1,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        limit: int | None = None,
        skip_bad: bool = False,
        check_content: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {tuple(patch_size)} needs {spatial_dims} values (spatial_dims)")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        self.save_hyperparameters()
        self.source = source
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.repeats = check_repeats(repeats)
        self._splits: dict[str, list[Item]] | None = None
        self.order = DataOrder(seed)  # training order and augmentations continue exactly on resume

    # --- items -------------------------------------------------------------------------------
    def items(self) -> dict[str, list[Item]]:
        """Load, check and split the datalist once (``train``/``val``/``test``); raises ``DatalistError``."""
        if self._splits is None:
            hp = self.hparams
            path = resolve_source(self.source)
            items = [i for i in segmentation_datalist(path) if "mask" in i]
            if not items:
                raise DatalistError(
                    [Problem(str(path), "no item has a mask; segmentation needs image + mask", "")]
                )
            if hp["limit"] is not None:
                items = [i for name in (None, *SPLIT_NAMES) for i in _of_split(items, name)[: hp["limit"]]]
            keys = ["image", "mask"] + (["fov"] if any("fov" in i for i in items) else [])
            rules = MaskRules(hp["num_classes"], hp["label_map"], hp["mask_threshold"])
            items = check_datalist(
                items,
                spatial_dims=self.spatial_dims,
                keys=keys,
                skip_bad=hp["skip_bad"],
                source=str(path),
                content=hp["check_content"],
                mask_rules=rules,
            )
            self._splits = self._split(items)
            self._check_first(self._splits["train"][0])
            for name, split in self._splits.items():
                log.info("%s: %s %d cases: %s", path, name, len(split), ", ".join(case_ids(split)))
        return self._splits

    def _split(self, items: list[Item]) -> dict[str, list[Item]]:
        hp = self.hparams
        test = [i for i in items if i.get("split") == "test"]
        rest = [i for i in items if i.get("split") != "test"]
        if not test:
            pool = [i for i in rest if i.get("split") != "val"]
            pool, test = split_train_val(pool, val_fraction=hp["test_fraction"], seed=hp["test_seed"])
            rest = pool + [i for i in rest if i.get("split") == "val"]
        train, val = split_train_val(rest, val_fraction=hp["val_fraction"], seed=hp["seed"])
        if hp["label_fraction"] < 1.0:
            train = select_label_fraction(train, hp["label_fraction"], seed=hp["seed"], stratify_key=None)
        if not train:
            raise DatalistError([Problem(str(self.source), "no training case left after the splits", "")])
        return {"train": train, "val": val, "test": test}

    # --- transforms --------------------------------------------------------------------------
    def preprocess(self, keys: Sequence[str]) -> Compose:
        """Deterministic, cacheable steps: load, orient, resample, intensity preset, mask values."""
        hp = self.hparams
        keys = list(keys)
        steps: list = [LoadItemd(keys)]
        if self.spatial_dims == 3:
            steps.append(to_ras(keys))
            if hp["spacing"]:
                modes = ["bilinear" if k == "image" else "nearest" for k in keys]
                steps.append(Spacingd(keys, pixdim=hp["spacing"], mode=modes))
        steps.append(intensity_transform(hp["intensity"], ["image"], ct_window=hp["ct_window"]))
        if hp["label_map"] and "mask" in keys:
            steps.append(MapLabelValued("mask", list(hp["label_map"]), list(hp["label_map"].values())))
        if hp["mask_threshold"] is not None and "mask" in keys:
            steps.append(AsDiscreted("mask", threshold=hp["mask_threshold"]))
        if "fov" in keys:
            steps.append(AsDiscreted("fov", threshold=0.5))
        return Compose(steps)

    def augment(self) -> list:
        """Random training steps: pad to the patch, foreground/background-centred crops, flips."""
        hp = self.hparams
        keys = ["image", "mask"]
        steps: list = [
            SpatialPadd(keys, spatial_size=self.patch_size),
            RandCropByPosNegLabeld(
                keys,
                label_key="mask",
                spatial_size=self.patch_size,
                pos=hp["pos"],
                neg=hp["neg"],
                num_samples=hp["samples_per_image"],
            ),
        ]
        steps += [
            RandFlipd(keys, prob=hp["flip_prob"], spatial_axis=axis) for axis in range(self.spatial_dims)
        ]
        return steps

    # --- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits = self.items()
        train = [{k: v for k, v in i.items() if k != "fov"} for i in splits["train"]]
        train_head = self.preprocess(["image", "mask"])
        sample = train_head(dict(train[0]))
        total = sum(map(len, splits.values()))
        check_fits(self.hparams["cache"], estimate_bytes(sample, total), self._cache_dir())
        transform = Compose(
            [*train_head.transforms, *self.augment()]
        )  # flat: the cache stops at the first random step
        self.train_set = make_dataset(train, transform, self.hparams["cache"], self._cache_dir())
        self.eval_sets = {
            name: make_dataset(
                splits[name], self._eval_transform(splits[name]), self.hparams["cache"], self._cache_dir()
            )
            for name in ("val", "test")
            if splits[name]
        }
        self._write_splits()

    def train_dataloader(self) -> DataLoader:
        return self.order.loader(
            self.train_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            train=True,
            repeats=self.repeats,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.order.load_state_dict(state_dict)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    # --- helpers -----------------------------------------------------------------------------
    def _eval_transform(self, items: list[Item]) -> Compose:
        return self.preprocess(["image", "mask"] + (["fov"] if all("fov" in i for i in items) else []))

    def _eval_loader(self, name: str) -> DataLoader | list:
        if name not in self.eval_sets:
            return []
        return DataLoader(self.eval_sets[name], batch_size=1, shuffle=False, num_workers=self.num_workers)

    def _check_first(self, item: Item) -> None:
        """Load one case fully: catches channel and mask-value mismatches before a long run starts."""
        data = self.preprocess(["image", "mask"])(dict(item))
        channels, values = data["image"].shape[0], data["mask"].unique().tolist()
        if channels != self.in_channels:
            reason = f"has {channels} channels but in_channels={self.in_channels}"
            raise DatalistError([Problem(str(item["image"]), reason)])
        if min(values) < 0 or max(values) >= self.num_classes:
            reason = (
                f"has values {_values(values)} but num_classes={self.num_classes} allows "
                f"0..{self.num_classes - 1}; set data.mask_threshold (128 for 0/255 masks) or data.label_map"
            )
            raise DatalistError([Problem(str(item["mask"]), reason, "mask")])

    def _cache_dir(self) -> Path | None:
        if self.hparams["cache"] != "disk":
            return None
        skip = ("num_workers", "batch_size", "repeats")
        key = json.dumps({k: v for k, v in self.hparams.items() if k not in skip}, default=str)
        root = (
            Path(self.hparams["cache_dir"]).expanduser()
            if self.hparams["cache_dir"]
            else cache_dir() / "persistent"
        )
        return root / ("seg-" + hashlib.sha256(key.encode()).hexdigest()[:16])

    def _write_splits(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "splits.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cases = {name: case_ids(split) for name, split in self.items().items()}
        out.write_text(json.dumps({"label_fraction": self.hparams["label_fraction"], **cases}, indent=2))


def _values(values: list[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:6])
    return shown + (f" (+{len(values) - 6} more)" if len(values) > 6 else "")


def _of_split(items: list[Item], split: str | None) -> list[Item]:
    return [i for i in items if i.get("split") == split]


def case_ids(items: Sequence[Item]) -> list[str]:
    """The ``patient_id`` of each item, else its image file name."""
    return [str(i.get("patient_id") or Path(str(i["image"])).name) for i in items]


# --- pairing ---------------------------------------------------------------------------------
def _image_files(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by name without the image suffix."""
    if not folder.is_dir():
        raise DatalistError([Problem(str(folder), "folder not found", "")])
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    found = {_stem(f.name): f for f in files if has_suffix(f.name, IMAGE_SUFFIXES)}
    if not found:
        raise DatalistError([Problem(str(folder), f"no images ({', '.join(IMAGE_SUFFIXES)})", "")])
    return found


def _stem(name: str) -> str:
    suffix = next(s for s in IMAGE_SUFFIXES if name.lower().endswith(s))
    return name[: -len(suffix)]


def _by_number(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    numbered: dict[str, Path] = {}
    for stem, path in files.items():
        match = re.search(r"\d+", stem)
        if match is None or match.group() in numbered:
            reason = "has no number" if match is None else f"repeats case number {match.group()}"
            raise DatalistError([Problem(str(path), f"cannot pair by case id: {reason} (in {folder})", "")])
        numbered[match.group()] = path
    return numbered


def _match(images: dict[str, Path], others: dict[str, Path], folder: Path) -> dict[str, Path]:
    """``others`` keyed like ``images`` (same stem, else the same first number); every image must match."""
    if set(images) <= set(others):
        return others
    by_number = _by_number(others, folder)
    matched = {}
    problems = []
    for case, image in images.items():
        number = re.search(r"\d+", case)
        if number and number.group() in by_number:
            matched[case] = by_number[number.group()]
        else:
            problems.append(
                Problem(str(image), f"no file with the same name or case number in {folder}", "mask")
            )
    if problems:
        raise DatalistError(problems)
    return matched
