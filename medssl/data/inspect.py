"""What a dataset holds before anyone trains on it: counts, shapes, spacings, intensities, labels, problems.

Every item is checked cheaply (``medssl.data.validation.find_problems``, headers only) and its label counted
(the datalist holds it); shapes, spacings, intensities and mask classes come from loading a seeded random
sample of at most ``max_items`` items, so inspecting a large dataset stays quick. ``medssl data inspect``
prints the report and writes it as JSON with a preview grid.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose

from medssl.data.datalist import Item
from medssl.data.preprocess import to_ras
from medssl.data.readers import LoadItemd, read_header
from medssl.data.validation import Problem, find_leaks, find_problems, format_report
from medssl.evaluation.figures import as_numpy, display_plane, grid, overlay, to_rgb

log = logging.getLogger("medssl.data")

PERCENTILES = (0.5, 99.5)
OUTLIER_FACTOR = 10


@dataclass
class Loaded:
    """One sampled item, loaded (and oriented to RAS in 3D): image ``(C, *spatial)``, mask if any."""

    item: Item
    image: Any
    mask: Any = None

    @property
    def name(self) -> str:
        image = self.item["image"]
        return Path(image).name if isinstance(image, str) else str(self.item.get("patient_id", "array"))


@dataclass
class Report:
    """The findings; ``lines()`` is the printed report, ``asdict(report)`` the JSON one."""

    source: str
    num_items: int
    splits: dict[str, int]
    spatial_dims: int
    spatial_dims_inferred: bool
    problems: list[str]
    sampled: int
    channels: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, Any] = field(default_factory=dict)
    spacing: dict[str, Any] = field(default_factory=dict)
    intensity: dict[str, float] = field(default_factory=dict)
    intensity_preprocessed: dict[str, float] = field(default_factory=dict)
    preprocessing: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    mask_classes: dict[str, dict[str, float]] = field(default_factory=dict)
    intensity_outliers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        per_split = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        dims = f"{self.spatial_dims}D" + (
            " (inferred; set it with --data.spatial_dims)" if self.spatial_dims_inferred else ""
        )
        out = [
            f"source: {self.source}",
            f"items: {self.num_items}" + (f" ({per_split})" if per_split else "") + f"; {dims}",
            f"checked: all {self.num_items} items (headers): {len(self.problems)} problem(s)",
            *(f"  {line}" for line in self.problems),
        ]
        if self.num_items > self.sampled:
            out.append(
                f"statistics from a seeded random sample of {self.sampled} of {self.num_items} items "
                "(--max-items to change)"
            )
        else:
            out.append(f"statistics from all {self.sampled} items")
        out.append("  channels: " + _counts(self.channels))
        if self.shapes:
            out.append("  shape: " + _range_line(self.shapes, "x"))
        if self.spacing:
            out.append("  spacing (mm): " + _range_line(self.spacing, " x "))
        if self.intensity:
            out.append("  intensity (as stored): " + _intensity_line(self.intensity))
        if self.intensity_outliers:
            shown = ", ".join(self.intensity_outliers[:10])
            more = " ..." if len(self.intensity_outliers) > 10 else ""
            out.append(
                f"  {len(self.intensity_outliers)} image(s) scaled differently (99.5th percentile over "
                f"{OUTLIER_FACTOR}x or under 1/{OUTLIER_FACTOR} of the median; a per-image preset such as "
                f"mr copes): {shown}{more}"
            )
        if self.intensity_preprocessed:
            out.append(
                f"  intensity after {self.preprocessing}: " + _intensity_line(self.intensity_preprocessed)
            )
        if self.labels:
            out.append(
                f"labels (all {self.labels['labelled']} labelled items): " + _counts(self.labels["all"])
            )
            for split, counts in self.labels.get("per_split", {}).items():
                out.append(f"  {split}: " + _counts(counts))
        if self.mask_classes:
            masks = max(int(v["images"]) for v in self.mask_classes.values())
            out.append(f"mask classes (over {masks} sampled masks):")
            for value, stats in self.mask_classes.items():
                out.append(
                    f"  {value}: in {int(stats['images'])} images, "
                    f"{100 * stats['voxel_fraction']:.2f} % of the voxels"
                )
            values = [int(v) for v in self.mask_classes]
            if max(values) >= len(values):
                out.append(
                    f"  mask values are not 0..{len(values) - 1}: fine-tuning needs data.mask_threshold "
                    "(e.g. 128 for 0/255 masks) or data.label_map (e.g. {255: 1})"
                )
        return out


def infer_spatial_dims(items: Sequence[Item], probe: int = 5) -> int:
    """2 or 3 from the first readable items (arrays: ``ndim - 1``; files: their header's spatial axes)."""
    votes: Counter[int] = Counter()
    for item in items[:probe]:
        image = item["image"]
        try:
            dims = image.ndim - 1 if not isinstance(image, str) else len(read_header(image).spatial_shape)
        except (ValueError, OSError):
            continue
        votes[min(max(dims, 2), 3)] += 1
    return votes.most_common(1)[0][0] if votes else 2


def sample(items: Sequence[Item], max_items: int, seed: int = 0) -> list[Item]:
    """At most ``max_items`` items: all of them, or a seeded random subset in datalist order."""
    if len(items) <= max_items:
        return list(items)
    keep = np.random.default_rng(seed).choice(len(items), max_items, replace=False)
    return [items[i] for i in sorted(keep)]


def load_sample(items: Sequence[Item], spatial_dims: int) -> tuple[list[Loaded], list[Problem]]:
    """Load image and mask of each item (RAS in 3D); items that fail to load become problems."""
    keys = ["image", "mask"]
    steps: list = [LoadItemd(keys, allow_missing_keys=True)]
    if spatial_dims == 3:
        steps.append(to_ras(keys, allow_missing_keys=True))
    load = Compose(steps)
    loaded, problems = [], []
    for item in items:
        try:
            data = load({k: item[k] for k in keys if k in item})
        except Exception as exc:  # a sample that does not load is a finding, not a crash
            where = item["image"] if isinstance(item["image"], str) else str(item.get("patient_id", "item"))
            problems.append(Problem(str(where), f"could not be loaded ({exc})"))
            continue
        loaded.append(Loaded(item, data["image"], data.get("mask")))
    return loaded, problems


def inspect_items(
    items: Sequence[Item],
    *,
    source: str,
    spatial_dims: int | None = None,
    max_items: int = 100,
    seed: int = 0,
    preprocess: Callable[[dict], dict] | None = None,
    preprocessing: str = "",
) -> tuple[Report, list[Loaded]]:
    """Check all items, load a sample, and summarise; also returns the loaded sample (for figures).

    ``preprocess`` (applied to ``{"image": loaded image}``, e.g. an intensity preset) adds the intensity
    range the network will see, described by ``preprocessing``.
    """
    inferred = spatial_dims is None
    dims = infer_spatial_dims(items) if spatial_dims is None else spatial_dims
    found = find_problems(items, spatial_dims=dims) + find_leaks(items)
    bad = {index for index, _ in found}
    problems = list(dict.fromkeys(problem for _, problem in found))  # one line per leaked patient
    usable = [item for index, item in enumerate(items) if index not in bad]
    loaded, load_problems = load_sample(sample(usable, max_items, seed), dims)
    problems += load_problems
    report = Report(
        source=source,
        num_items=len(items),
        splits=dict(sorted(Counter(str(i["split"]) for i in items if "split" in i).items())),
        spatial_dims=dims,
        spatial_dims_inferred=inferred,
        problems=format_report(problems).splitlines()[1:] if problems else [],
        sampled=len(loaded),
        labels=label_balance(items),
        preprocessing=preprocessing,
    )
    if loaded:
        images = [as_numpy(one.image) for one in loaded]
        report.channels = dict(Counter(str(image.shape[0]) for image in images).most_common())
        report.shapes = _summary([image.shape[1:] for image in images])
        report.spacing = _summary([_spacing(one.image) for one in loaded], decimals=3)
        report.intensity = intensity_summary(images)
        report.intensity_outliers = intensity_outliers(images, [one.name for one in loaded])
        if preprocess is not None:
            after = [as_numpy(preprocess({"image": one.image})["image"]) for one in loaded]
            report.intensity_preprocessed = intensity_summary(after)
        report.mask_classes = mask_classes([as_numpy(one.mask) for one in loaded if one.mask is not None])
    return report, loaded


def label_balance(items: Sequence[Item]) -> dict[str, Any]:
    """Counts of each label over all items and per split; 0/1 vectors count positives per class."""
    labelled = [item for item in items if "label" in item]
    if not labelled:
        return {}

    def counts(group: Sequence[Item]) -> dict[str, int]:
        counter: Counter[str] = Counter()
        for item in group:
            label = item["label"]
            if isinstance(label, list) and all(v in (0, 1) for v in label):  # a 0/1 vector
                counter.update(f"class {i}" for i, v in enumerate(label) if v)
            elif isinstance(label, list):  # class indices
                counter.update(str(v) for v in label)
            else:
                counter[str(label)] += 1
        return dict(sorted(counter.items(), key=lambda kv: _natural(kv[0])))

    report: dict[str, Any] = {"labelled": len(labelled), "all": counts(labelled)}
    splits = sorted({str(item["split"]) for item in labelled if "split" in item})
    if len(splits) > 1:
        report["per_split"] = {s: counts([i for i in labelled if i.get("split") == s]) for s in splits}
    return report


def intensity_summary(images: Sequence[np.ndarray]) -> dict[str, float]:
    """Overall min / max and the median over images of each image's 0.5 / 99.5 percentiles, mean, std."""
    lows, highs = zip(*(np.percentile(image, PERCENTILES) for image in images), strict=True)
    return {
        "min": float(min(image.min() for image in images)),
        "max": float(max(image.max() for image in images)),
        "p0.5": float(np.median(lows)),
        "p99.5": float(np.median(highs)),
        "mean": float(np.mean([image.mean() for image in images])),
        "std": float(np.mean([image.std() for image in images])),
    }


def intensity_outliers(images: Sequence[np.ndarray], names: Sequence[str]) -> list[str]:
    """Images whose 99.5th percentile is ``OUTLIER_FACTOR`` times above or below the median one."""
    highs = np.array([np.percentile(image, PERCENTILES[1]) for image in images], dtype=np.float64)
    median = float(np.median(highs))
    if median <= 0:
        return []
    ratio = np.maximum(highs, 1e-12) / median
    return [
        name for name, r in zip(names, ratio, strict=True) if r > OUTLIER_FACTOR or r < 1 / OUTLIER_FACTOR
    ]


def mask_classes(masks: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per mask value: in how many masks it occurs and its share of all voxels."""
    if not masks:
        return {}
    present: Counter[int] = Counter()
    voxels: Counter[int] = Counter()
    for mask in masks:
        values, counts = np.unique(np.round(mask).astype(np.int64), return_counts=True)
        present.update(int(v) for v in values)
        voxels.update({int(v): int(c) for v, c in zip(values, counts, strict=True)})
    total = sum(voxels.values())
    return {
        str(v): {"images": float(present[v]), "voxel_fraction": voxels[v] / total} for v in sorted(voxels)
    }


def preview_grid(
    loaded: Sequence[Loaded], *, mask_values: Sequence[int] = (), columns: int = 8, tile: int = 96
) -> np.ndarray:
    """Images (3D: middle slice) with their masks in colour, captioned with name and label.

    Mask value ``mask_values[i]`` gets colour ``i`` (0 is the background), so 0/255 masks show in the
    first class colour.
    """
    values = np.asarray(sorted(mask_values) or [0], dtype=np.int64)
    tiles, captions = [], []
    for one in loaded:
        file_axes = isinstance(one.item["image"], str)
        rgb = to_rgb(display_plane(one.image, file_axes=file_axes))
        if one.mask is not None:
            plane = np.round(display_plane(one.mask, file_axes=file_axes)).astype(np.int64)
            rank = np.searchsorted(values, plane)
            rgb = overlay(rgb, np.where(plane > 0, rank + (values[0] > 0), 0))
        tiles.append(rgb)
        label = one.item.get("label")
        captions.append(one.name + (f" [{label}]" if label is not None else ""))
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    caption_rows = [captions[i : i + columns] for i in range(0, len(captions), columns)]
    return grid(rows, captions=caption_rows, tile=tile)


# --- formatting ------------------------------------------------------------------------------------


def _spacing(image: Any) -> tuple[float, ...]:
    pixdim = getattr(image, "pixdim", None)
    spatial = image.ndim - 1
    return tuple(float(s) for s in pixdim[:spatial]) if pixdim is not None else (1.0,) * spatial


def _summary(values: Sequence[Sequence[float]], decimals: int = 0) -> dict[str, Any]:
    """Per-axis min / median / max, the number of distinct values and the most common ones."""
    rounded = [tuple(round(float(v), decimals) if decimals else int(v) for v in value) for value in values]
    array = np.asarray(rounded, dtype=np.float64)
    common = Counter(rounded).most_common(3)
    return {
        "min": np.min(array, axis=0).tolist(),
        "median": np.median(array, axis=0).tolist(),
        "max": np.max(array, axis=0).tolist(),
        "distinct": len(set(rounded)),
        "most_common": [[list(value), count] for value, count in common],
    }


def _fmt(values: Sequence[float], sep: str) -> str:
    return sep.join(f"{v:g}" for v in values)


def _range_line(summary: dict[str, Any], sep: str) -> str:
    if summary["distinct"] == 1:
        value, count = summary["most_common"][0]
        return f"{_fmt(value, sep)} (all {count})"
    return (
        f"min {_fmt(summary['min'], sep)}, median {_fmt(summary['median'], sep)}, "
        f"max {_fmt(summary['max'], sep)} ({summary['distinct']} distinct)"
    )


def _intensity_line(stats: dict[str, float]) -> str:
    return (
        f"min {stats['min']:.4g}, max {stats['max']:.4g}; per image (median) "
        f"{PERCENTILES[0]}-{PERCENTILES[1]} percentiles {stats['p0.5']:.4g}..{stats['p99.5']:.4g}; "
        f"mean {stats['mean']:.4g}, std {stats['std']:.4g}"
    )


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{key}: {n} ({100 * n / total:.1f} %)" for key, n in counts.items())


def _natural(key: str) -> tuple[int, Any]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)
