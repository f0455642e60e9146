"""N-D patchify / unpatchify and per-sample random token masking (MAE), 2D and 3D in one code path.

Tokens are ordered like MONAI's conv patch embedding (``conv(x).flatten(2)``: the patch grid in row-major
order, last axis fastest), so patch ``i`` of ``patchify`` is token ``i`` of ``ViT.patch_embedding``. Inside
a patch the values are ordered ``(p1, p2[, p3], c)``, as in MAE and MONAI's perceptron patch embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def patchify(x: Tensor, patch_size: Sequence[int]) -> Tensor:
    """Cut ``(B, C, *spatial)`` into ``(B, L, prod(patch_size) * C)`` non-overlapping patches."""
    batch, channels, *spatial = x.shape
    grid = patch_grid(spatial, patch_size)
    dims = len(grid)
    split = [n for pair in zip(grid, patch_size, strict=True) for n in pair]  # g1, p1, g2, p2, ...
    x = x.reshape(batch, channels, *split)  # (B, C, g1, p1, g2, p2, ...)
    order = [0, *range(2, 2 + 2 * dims, 2), *range(3, 3 + 2 * dims, 2), 1]  # B, grid..., patch..., C
    return x.permute(order).reshape(batch, math.prod(grid), math.prod(patch_size) * channels)


def unpatchify(patches: Tensor, patch_size: Sequence[int], grid: Sequence[int], channels: int) -> Tensor:
    """Inverse of ``patchify``: ``(B, L, prod(patch_size) * C)`` back to ``(B, C, *spatial)``."""
    batch = patches.shape[0]
    dims = len(grid)
    x = patches.reshape(batch, *grid, *patch_size, channels)  # (B, g1, g2, ..., p1, p2, ..., C)
    order = [0, 1 + 2 * dims] + [i for axis in range(dims) for i in (1 + axis, 1 + dims + axis)]
    return x.permute(order).reshape(batch, channels, *(g * p for g, p in zip(grid, patch_size, strict=True)))


def patch_grid(spatial: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    """Number of patches along each axis; every axis must be divisible by its patch size."""
    if len(spatial) != len(patch_size) or any(s % p for s, p in zip(spatial, patch_size, strict=True)):
        raise ValueError(f"image size {tuple(spatial)} is not divisible by patch size {tuple(patch_size)}")
    return tuple(s // p for s, p in zip(spatial, patch_size, strict=True))


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample, ``round(L * (1 - mask_ratio))``; one must stay and (ratio > 0) one go."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    keep = round(num_patches * (1.0 - mask_ratio))
    if keep < 1 or (mask_ratio > 0 and keep == num_patches):
        raise ValueError(
            f"mask_ratio={mask_ratio} with {num_patches} patches keeps {keep}: "
            "at least one patch must stay visible and, for a ratio above 0, one must be masked"
        )
    return keep


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking, as in MAE.

    Returns ``ids_keep`` ``(B, L_keep)`` (visible token indices, in shuffled order), ``mask`` ``(B, L)``
    (1 = removed, 0 = visible) and ``ids_restore`` ``(B, L)``, the permutation that puts
    ``cat([visible, masked])`` tokens back in their original order.
    """
    keep = num_visible(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, device=device, generator=generator)  # (B, L)
    ids_shuffle = noise.argsort(dim=1)  # (B, L): the first `keep` stay visible
    ids_restore = ids_shuffle.argsort(dim=1)  # (B, L)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], mask.gather(1, ids_restore), ids_restore
