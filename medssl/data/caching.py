"""The caching choice (none / memory / disk) and a size estimate made before anything is cached."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import psutil
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset

CacheMode = Literal["none", "memory", "disk"]
log = logging.getLogger("medssl.data")

#: Refuse to cache when the estimate exceeds this share of the free RAM or disk.
MAX_SHARE = 0.8


class CacheTooLargeError(ValueError):
    """The cache would not fit; the message says how much is needed and what to do instead."""


def estimate_bytes(sample: dict[str, Any], count: int) -> int:
    """Bytes the cached form of ``count`` items takes, from one transformed ``sample``."""
    per_item = sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, torch.Tensor))
    return per_item * count


def check_fits(mode: CacheMode, needed: int, cache_dir: Path | None) -> None:
    """Raise ``CacheTooLargeError`` when ``needed`` bytes will not fit in RAM (memory) or on disk."""
    if mode == "none":
        return
    if mode == "memory":
        free, where = psutil.virtual_memory().available, "available RAM"
    else:
        assert cache_dir is not None
        cache_dir.mkdir(parents=True, exist_ok=True)
        free, where = shutil.disk_usage(cache_dir).free, f"free disk at {cache_dir}"
    log.info("cache=%s needs about %s (%s: %s)", mode, _gib(needed), where, _gib(free))
    if needed > MAX_SHARE * free:
        other = "disk" if mode == "memory" else "none"
        raise CacheTooLargeError(
            f"cache={mode} needs about {_gib(needed)} but only {_gib(free)} of {where} is free; "
            f"use --data.cache {other}, a smaller --data.spatial_size, or fewer images"
        )


def make_dataset(
    items: Sequence[dict[str, Any]], transform: Callable, mode: CacheMode, cache_dir: Path | None
) -> Dataset:
    """A MONAI dataset caching the deterministic head of ``transform`` as ``mode`` says."""
    if mode == "memory":
        return CacheDataset(list(items), transform, cache_rate=1.0, num_workers=0, progress=False)
    if mode == "disk":
        assert cache_dir is not None
        return PersistentDataset(list(items), transform, cache_dir=cache_dir)
    return Dataset(list(items), transform)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"
