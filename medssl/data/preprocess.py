"""The deterministic, cacheable image preprocessing every DataModule shares, and its up-front checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import Compose, Orientationd, ResizeWithPadOrCropd, Spacingd

from medssl.data.paths import cache_dir as default_cache_dir
from medssl.data.readers import LoadItemd
from medssl.data.validation import DatalistError, Problem
from medssl.transforms.intensity import intensity_transform

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # MONAI's default, given to keep it from warning


def to_ras(keys: KeysCollection, *, allow_missing_keys: bool = False) -> Orientationd:
    """Reorient ``keys`` to RAS (3D volumes; world orientation from each image's affine)."""
    return Orientationd(keys, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=allow_missing_keys)


def preprocess_transform(
    *,
    spatial_dims: int,
    intensity: str,
    ct_window: str | tuple[float, float] = "soft_tissue",
    spacing: Sequence[float] | None = None,
    spatial_size: Sequence[int] | None = None,
) -> Compose:
    """Load ``image``; orient to RAS and resample (3D); intensity preset; pad/crop to ``spatial_size``."""
    steps: list = [LoadItemd("image")]
    if spatial_dims == 3:
        steps.append(to_ras("image"))
        if spacing:
            steps.append(Spacingd("image", pixdim=tuple(spacing), mode="bilinear"))
    steps.append(intensity_transform(intensity, ["image"], ct_window=ct_window))
    if spatial_size:
        steps.append(ResizeWithPadOrCropd("image", spatial_size=tuple(spatial_size)))
    return Compose(steps)


def check_channels(preprocess: Compose, item: dict[str, Any], in_channels: int, source: str) -> None:
    """Load one image fully: a channel mismatch stops the run before it starts, naming the file."""
    image = preprocess(dict(item))["image"]
    if image.shape[0] != in_channels:
        path = item["image"] if isinstance(item["image"], str) else source
        raise DatalistError(
            [Problem(str(path), f"has {image.shape[0]} channels but in_channels={in_channels}")]
        )


def persistent_dir(cache_dir: str | None, settings: Any, prefix: str = "") -> Path:
    """A folder for ``cache: disk`` keyed by a hash of the preprocessing ``settings``."""
    key = json.dumps(settings, default=str, sort_keys=True)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "persistent"
    return root / (prefix + hashlib.sha256(key.encode()).hexdigest()[:16])
