"""Multi-view SSL augmentations as MONAI dictionary transforms, one code path for 2D and 3D.

Each view gets its own transform instance, so the random crop, flip and intensity change differ
between views (a MONAI dictionary transform draws one set of random parameters for all its keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureTyped,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    SelectItemsd,
)


@dataclass(frozen=True)
class ViewAugment:
    """Strength of the augmentations that make one view; the defaults suit grey-scale scans.

    Args:
        size: output size of the view per spatial axis (an int is used on every axis).
        min_scale: smallest crop side as a fraction of the image side (random resized crop).
        max_scale: largest crop side as a fraction of the image side; below 1, crops of a large image
            (e.g. a 565 px fundus photograph) keep about their native scale once resized to ``size``.
        flip_prob: probability of a flip along each axis of ``flip_axes``.
        flip_axes: the spatial axes that may be flipped; ``None``: every axis. Anatomy is rarely symmetric
            top-bottom: e.g. ``[1]`` flips a 2D image left-right only, ``[0]`` a RAS volume.
        intensity: maximum relative change of scale and of shift of the intensities.
        gamma: range of the random gamma (contrast) change; ``(1, 1)`` switches it off.
        blur_prob: probability of a Gaussian blur.
        noise_std: standard deviation of additive Gaussian noise (0 switches it off).
    """

    size: int | Sequence[int] = 32
    min_scale: float = 0.4
    max_scale: float = 1.0
    flip_prob: float = 0.5
    flip_axes: Sequence[int] | None = None
    intensity: float = 0.2
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_prob: float = 0.2
    noise_std: float = 0.02


def spatial_steps(name: str, augment: ViewAugment, spatial_dims: int) -> list:
    """Random resized crop to ``augment.size`` and random flips of the key ``name``."""
    if not 0 < augment.min_scale <= augment.max_scale <= 1:
        raise ValueError(f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got {augment}")
    steps: list = [
        RandScaleCropd(name, roi_scale=augment.min_scale, max_roi_scale=augment.max_scale, random_size=True),
        Resized(name, spatial_size=per_axis(augment.size, spatial_dims), mode="area"),
    ]
    axes = range(spatial_dims) if augment.flip_axes is None else augment.flip_axes
    if any(not 0 <= axis < spatial_dims for axis in axes):
        raise ValueError(f"flip_axes {list(axes)} must be spatial axes 0..{spatial_dims - 1}")
    if augment.flip_prob > 0:
        steps += [RandFlipd(name, prob=augment.flip_prob, spatial_axis=axis) for axis in axes]
    return steps


def intensity_steps(name: str, augment: ViewAugment) -> list:
    """Random intensity scale/shift, gamma, blur and noise of the key ``name`` (no spatial change)."""
    steps: list = []
    if augment.intensity > 0:
        steps += [
            RandScaleIntensityd(name, factors=augment.intensity, prob=0.8),
            RandShiftIntensityd(name, offsets=augment.intensity, prob=0.8),
        ]
    if augment.gamma != (1.0, 1.0):
        steps.append(RandAdjustContrastd(name, gamma=augment.gamma, prob=0.5))
    if augment.blur_prob > 0:
        sigma = (0.25, 1.0)
        steps.append(
            RandGaussianSmoothd(name, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=augment.blur_prob)
        )
    if augment.noise_std > 0:
        steps.append(RandGaussianNoised(name, std=augment.noise_std, prob=0.5))
    return steps


def view_transform(name: str, augment: ViewAugment, spatial_dims: int, source: str = "image") -> Compose:
    """Build one augmented view ``name`` (random resized crop, flips, intensity) in place."""
    return Compose(spatial_steps(name, augment, spatial_dims) + intensity_steps(name, augment))


def multi_view_transform(
    augments: Sequence[ViewAugment],
    spatial_dims: int,
    prefix: str = "view",
    source: str = "image",
    region: float = 1.0,
) -> Compose:
    """Turn ``{source: image}`` into ``{f"{prefix}_{i}": view_i}`` float tensors, one per augment, all cut
    from one random ``region`` window of the image (see ``shared_region``)."""
    names = [f"{prefix}_{i}" for i in range(len(augments))]
    return Compose(
        [
            *shared_region(source, region),
            CopyItemsd(source, times=len(names), names=names),
            *[view_transform(n, a, spatial_dims) for n, a in zip(names, augments, strict=True)],
            SelectItemsd(names),  # only the views reach the batch: no meta, paths or mixed-type labels
            EnsureTyped(names, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def shared_region(source: str, region: float) -> list:
    """A random window of ``region`` times the image side per axis, cut once before the views are made.

    Every view of the image then comes from that window, and its crop scales are fractions of the window's
    side: small crops of a large image (a fundus photograph, a pathology tile) overlap instead of landing
    on unrelated places. ``region=1`` keeps the whole image (no step).
    """
    return [] if check_region(region) == 1 else [RandScaleCropd(source, roi_scale=region, random_size=False)]


def check_region(region: float) -> float:
    """``region`` if it is a side fraction in (0, 1]; methods check it when built, so the CLI reports it."""
    if not 0 < region <= 1:
        raise ValueError(f"view region must satisfy 0 < region <= 1 (a side fraction), got {region}")
    return region


def per_axis(size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    if isinstance(size, int):
        return (size,) * spatial_dims
    if len(size) != spatial_dims:
        raise ValueError(f"view size {tuple(size)} has {len(size)} axes but spatial_dims={spatial_dims}")
    return tuple(int(s) for s in size)
