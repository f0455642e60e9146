"""Checks that need the voxels, run once over the whole datalist before training (in a thread pool).

Images: NaN / Inf voxels, constant images (nothing to learn; min-max scaling divides by zero). Masks: every
value must be a class ``0 .. num_classes - 1`` after the DataModule's ``label_map`` / ``mask_threshold``.
Each file is read with the readers training uses, so a file that passes here also loads there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medssl.data.readers import LoadItemd


@dataclass(frozen=True)
class MaskRules:
    """What a segmentation mask's values must be: classes ``0 .. num_classes - 1`` after the mapping."""

    num_classes: int
    label_map: dict[int, int] | None = None
    threshold: float | None = None

    def classes(self, values: np.ndarray) -> np.ndarray:
        """The class each of the mask's distinct ``values`` becomes."""
        if self.label_map:
            values = np.asarray(
                [self.label_map.get(int(v), v) if float(v).is_integer() else v for v in values]
            )
        if self.threshold is not None:
            values = (values >= self.threshold).astype(values.dtype)
        return values


def image_problem(array: np.ndarray) -> str | None:
    """Why the voxels of an image cannot be trained on, or None."""
    finite = np.isfinite(array)
    if not finite.all():
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        parts = [f"{nan:,} NaN" if nan else "", f"{inf:,} Inf" if inf else ""]
        return f"has {' and '.join(p for p in parts if p)} voxel values (of {array.size:,})"
    low, high = float(array.min()), float(array.max())
    if low == high:
        return f"is constant (every voxel is {low:g}): nothing to learn from"
    return None


def mask_problem(array: np.ndarray, rules: MaskRules) -> str | None:
    """Why a mask's values are not the declared classes, or None."""
    if not np.isfinite(array).all():
        return "mask has NaN / Inf values"
    values = np.unique(array)
    classes = rules.classes(values)
    bad = values[(classes < 0) | (classes >= rules.num_classes) | (classes != np.round(classes))]
    if bad.size == 0:
        return None
    shown = ", ".join(f"{v:g}" for v in bad[:6]) + (f" (+{bad.size - 6} more)" if bad.size > 6 else "")
    hint = (
        "; set data.mask_threshold (128 for 0/255 masks) or data.label_map" if rules.label_map is None else ""
    )
    return (
        f"mask values {shown} are not classes 0..{rules.num_classes - 1} "
        f"(num_classes={rules.num_classes}){hint}"
    )


def _as_array(loader: LoadItemd, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return value.numpy()
    return np.asarray(loader.load(value).array)


def find_content_problems(
    jobs: Sequence[tuple[int, str, Any]], *, mask_rules: MaskRules | None, workers: int | None = None
) -> list[tuple[int, str, str]]:
    """``(item index, key, value)`` jobs -> ``(item index, key, reason)`` for the values that fail.

    ``key`` ``"mask"`` is checked against ``mask_rules`` (skipped when None), any other key as an image.
    """
    loader = LoadItemd("image")

    def check(job: tuple[int, str, Any]) -> tuple[int, str, str] | None:
        index, key, value = job
        try:
            array = _as_array(loader, value)
        except Exception as exc:  # the header looked fine but the data does not decode
            reason = str(exc.__cause__ or exc).replace(str(value), os.path.basename(str(value)))
            return index, key, f"could not read the voxels ({reason})"
        rule: Callable[[np.ndarray], str | None]
        if key == "mask":
            if mask_rules is None:
                return None
            rule = lambda a: mask_problem(a, mask_rules)  # noqa: E731
        else:
            rule = image_problem
        found = rule(array)
        return (index, key, found) if found else None

    workers = workers or min(8, os.cpu_count() or 1)
    if len(jobs) < 2 or workers == 1:
        results = [check(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, jobs))
    return [r for r in results if r is not None]
