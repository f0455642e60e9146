"""Spatially aligned view pairs for JCL: one spatial augmentation, two intensity augmentations, two scales."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import Compose, CopyItemsd, EnsureTyped, Resized, SelectItemsd

from medssl.transforms.views import ViewAugment, intensity_steps, per_axis, spatial_steps


def aligned_pair_transform(
    augment: ViewAugment, scale: float, spatial_dims: int, keep: Sequence[str] = ("position",)
) -> Compose:
    """``{"image"}`` -> ``{"view_full", "view_small"}``: the same crop (random resized crop + flips, applied
    once), intensity-augmented twice independently; ``view_small`` is then downsampled by ``scale``.

    Keys in ``keep`` (e.g. a normalised slice ``position``) pass through to the batch when present.
    """
    small = [max(1, round(s * scale)) for s in per_axis(augment.size, spatial_dims)]
    names = ["view_full", "view_small"]
    return Compose(
        [
            *spatial_steps("image", augment, spatial_dims),
            CopyItemsd("image", times=2, names=names),
            *intensity_steps("view_full", augment),
            *intensity_steps("view_small", augment),
            Resized("view_small", spatial_size=small, mode="area"),
            SelectItemsd([*names, *keep], allow_missing_keys=True),
            EnsureTyped(names, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )
