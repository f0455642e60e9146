"""DINO multi-crop views as MONAI dictionary transforms, one code path for 2D and 3D.

Two global crops (large, at the global size) and ``num_local`` local crops (small regions, at a smaller
size). Scales are side fractions per axis, as in ``ViewAugment.min_scale``: DINO's area scales
(0.4-1 global, 0.05-0.4 local) are sides of about 0.63-1 and 0.22-0.63 in 2D.
"""

from __future__ import annotations

import dataclasses

import torch
from monai.transforms import Compose, CopyItemsd, EnsureTyped, RandScaleCropd, SelectItemsd

from medssl.transforms.views import ViewAugment, shared_region, view_transform

NUM_GLOBAL = 2


def multi_crop_transform(
    global_augment: ViewAugment,
    local_augment: ViewAugment,
    num_local: int,
    spatial_dims: int,
    local_max_scale: float = 0.5,
    source: str = "image",
    region: float = 1.0,
) -> Compose:
    """Turn ``{source: image}`` into ``global_0``, ``global_1``, ``local_0`` .. ``local_{num_local-1}``.

    A global crop side is ``global_augment.min_scale``..1 of the image side; a local crop side is
    ``local_augment.min_scale``..``local_max_scale``: a fixed ``local_max_scale`` window at a random
    place, then ``view_transform``'s random resized crop inside it. Every crop has its own transform
    instance, hence its own random crop, flips and intensity change. With ``region`` below 1 every crop is
    cut from one random window of that side fraction, and the scales above are fractions of the window.
    """
    if not 0 < local_augment.min_scale <= local_max_scale <= 1:
        raise ValueError(
            f"local crop scales must satisfy 0 < local_augment.min_scale <= local_max_scale <= 1, "
            f"got {local_augment.min_scale} and {local_max_scale}"
        )
    if num_local < 0:
        raise ValueError(f"num_local must be >= 0, got {num_local}")
    globals_ = [f"global_{i}" for i in range(NUM_GLOBAL)]
    locals_ = [f"local_{i}" for i in range(num_local)]
    inner = dataclasses.replace(local_augment, min_scale=local_augment.min_scale / local_max_scale)
    steps: list = [
        *shared_region(source, region),
        CopyItemsd(source, times=len(globals_ + locals_), names=globals_ + locals_),
    ]
    steps += [view_transform(name, global_augment, spatial_dims) for name in globals_]
    for name in locals_:
        steps += [
            RandScaleCropd(name, roi_scale=local_max_scale, random_size=False),
            view_transform(name, inner, spatial_dims),
        ]
    steps += [
        SelectItemsd(globals_ + locals_),  # only the crops reach the batch
        EnsureTyped(globals_ + locals_, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    return Compose(steps)
