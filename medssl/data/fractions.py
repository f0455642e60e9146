"""Label fractions: keep a seeded, stratified share of the training PATIENTS (never part of a patient)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

Item = dict[str, Any]


def select_label_fraction(
    items: Sequence[Item], fraction: float, *, seed: int, stratify_key: str | None = "label"
) -> list[Item]:
    """Keep ``fraction`` of the patients of ``items`` with all their items, in their original order.

    Patients are the items sharing a ``patient_id`` (an item without one is its own patient). With
    ``stratify_key``, patients are grouped by the stratum of their first item's value under that key
    (see ``stratum``) and ``round(fraction * n)`` patients, at least one, are drawn from each group, so the
    class ratios stay those of ``items`` up to rounding and every class keeps a patient. Each group is
    shuffled once with ``seed`` and its first patients are kept: with one seed, a smaller fraction is a
    subset of a larger one. ``fraction=1.0`` returns every item.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(items)
    patients: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        patients[_patient_key(index, item)].append(index)
    strata: dict[Hashable, list[tuple[str, str]]] = defaultdict(list)
    for key, indices in patients.items():
        first = items[indices[0]]
        strata[stratum(first.get(stratify_key)) if stratify_key else None].append(key)
    rng = random.Random(seed)
    keep: set[int] = set()
    for group in sorted(strata, key=repr):  # a fixed order of draws from the one rng
        keys = sorted(strata[group])
        rng.shuffle(keys)
        for key in keys[: max(1, round(fraction * len(keys)))]:
            keep.update(patients[key])
    return [item for index, item in enumerate(items) if index in keep]


def stratum(label: Any) -> Hashable:
    """The stratum of a label: itself for an int or str; for a multi-label list, its first positive class.

    An all-negative multi-label row is its own stratum (``-1``); a missing label is ``None``.
    """
    if isinstance(label, list | tuple):
        return next((cls for cls, value in enumerate(label) if value), -1)
    return label


def _patient_key(index: int, item: Item) -> tuple[str, str]:
    return ("patient", str(item["patient_id"])) if "patient_id" in item else ("item", str(index))


def case_ids(items: Sequence[Item]) -> list[str]:
    """The ``patient_id`` of each item, else its image file name (``#<index>`` for an in-memory array)."""
    return [
        str(i["patient_id"])
        if "patient_id" in i
        else Path(i["image"]).name
        if isinstance(i["image"], str)
        else f"#{n}"
        for n, i in enumerate(items)
    ]
