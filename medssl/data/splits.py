"""Train/val splits that keep every patient on one side, and a patient-leakage check."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

Item = dict[str, Any]


def _group_key(index: int, item: Item) -> str:
    return f"patient:{item['patient_id']}" if "patient_id" in item else f"item:{index}"


def split_train_val(
    items: Sequence[Item], *, val_fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    """Split `items` into train and val; "test" items are left out.

    Items that carry `split` "val" make the split as given. Otherwise the "train" (or split-less) items
    are divided at patient level (items sharing a `patient_id` stay together; items without one are
    their own group): a seeded shuffle of the sorted groups, at least one val group when
    `val_fraction > 0` and there are two groups or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    pool = [item for item in items if item.get("split", "train") == "train"]
    given_val = [item for item in items if item.get("split") == "val"]
    if given_val:
        return pool, given_val
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(pool):
        groups[_group_key(index, item)].append(index)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_val = round(val_fraction * len(keys))
    if val_fraction > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val_indices = {index for key in keys[:n_val] for index in groups[key]}
    train = [item for index, item in enumerate(pool) if index not in val_indices]
    val = [item for index, item in enumerate(pool) if index in val_indices]
    return train, val


def check_patient_leakage(items: Sequence[Item]) -> list[str]:
    """Patient ids (sorted) whose items appear in more than one split."""
    splits: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if "patient_id" in item:
            splits[str(item["patient_id"])].add(item.get("split", "train"))
    return sorted(pid for pid, seen in splits.items() if len(seen) > 1)
