"""MIM: MAE's masked reconstruction for a whole CNN U-Net, encoder and every decoder block.

A random share of the view's patches is replaced by a learned mask value; the U-Net (all decoder blocks)
plus a 1x1 reconstruction head predicts the missing voxels, and the loss is the mean squared error on the
masked voxels only. Unlike MAE on a ViT, a CNN cannot skip the masked patches: the masking is dense (the
encoder sees the mask value), which Wald et al. found as good as sparse convolutions for 3D U-Nets. The
whole U-Net is pretrained, so fine-tuning starts with no decoder block at its fresh init.

- [0]: MAE, 2021, https://arxiv.org/abs/2111.06377
- [1]: SparK, 2023, https://arxiv.org/abs/2301.03580
- [2]: Revisiting MAE pre-training for 3D medical image segmentation, 2025, https://arxiv.org/abs/2410.23132
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from monai.networks.layers import Conv
from monai.transforms import Compose
from torch import Tensor, nn

from medssl.backbones.unet import UNetBackbone
from medssl.evaluation.reconstruction import ReconstructionFigure
from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.patches import patch_grid, random_masking
from medssl.ops.precision import in_float32
from medssl.transforms.views import ViewAugment, multi_view_transform, per_axis


def masked_voxel_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the voxels where ``mask`` (broadcast over channels) is 1."""
    per_voxel = (pred - target).pow(2).mean(dim=1, keepdim=True)  # (B, 1, *S)
    return (per_voxel * mask).sum() / mask.sum().clamp_min(1)


def visible_mean(target: Tensor, mask: Tensor) -> Tensor:
    """The no-learning reference: every voxel at its image's mean over the visible (``mask`` 0) voxels."""
    visible = 1 - mask  # (B, 1, *S)
    spatial = tuple(range(2, target.ndim))
    mean = (target * visible).sum(spatial, keepdim=True) / visible.sum(spatial, keepdim=True).clamp_min(1)
    return mean.expand_as(target)  # (B, C, *S)


def random_patch_mask(
    shape: Sequence[int],
    patch_size: Sequence[int],
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(B, 1, *spatial)`` with 1 on ``round(L * mask_ratio)`` random patches per image, 0 elsewhere."""
    batch, spatial = shape[0], shape[2:]
    grid = patch_grid(spatial, patch_size)
    _, mask, _ = random_masking(batch, math.prod(grid), mask_ratio, None, generator)  # (B, L)
    mask = mask.view(batch, 1, *grid)
    for axis, size in enumerate(patch_size):
        mask = mask.repeat_interleave(size, dim=2 + axis)
    return mask  # (B, 1, *spatial)


@METHODS.register("mim")
class MIM(SSLMethod):
    """Masked image modelling of an encoder-decoder backbone (``unet``: MONAI ``BasicUNet``), 2D and 3D.

    Logged with the loss: ``visible_mean``, the loss of filling every masked voxel with its image's visible
    mean; only a loss below it is learning.

    Args:
        mask_ratio: share of patches masked per image.
        mask_patch: masked patch size per axis (an int is used on every axis); the view size must be a
            multiple of it.
        augment: how the single view is made (weak: crops, flips, small intensity changes); its ``size``
            must be a multiple of ``mask_patch`` and of the U-Net's total stride (16).
        save_reconstructions: write ``<run dir>/reconstructions/epoch_XXX.png`` after each validation.
        **base: the ``SSLMethod`` options; ``backbone`` must be an encoder-decoder (``unet``).
    """

    def __init__(
        self,
        *,
        backbone: str = "unet",
        mask_ratio: float = 0.6,
        mask_patch: int | Sequence[int] = 8,
        augment: ViewAugment = ViewAugment(
            size=64, min_scale=0.7, intensity=0.1, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0
        ),
        save_reconstructions: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(backbone=backbone, **base)
        if not getattr(self.backbone, "is_encoder_decoder", False):
            raise ValueError(f"MIM needs an encoder-decoder backbone such as 'unet', got {backbone!r}")
        self.mask_patch = per_axis(mask_patch, self.spatial_dims)
        size = per_axis(augment.size, self.spatial_dims)
        stride = 2 ** (len(self.unet.feature_channels) - 1)
        if any(s % p or s % stride for s, p in zip(size, self.mask_patch, strict=True)):
            raise ValueError(
                f"MIM view size {size} must be a multiple of mask_patch {self.mask_patch} and of the U-Net's "
                f"total stride {stride} on every axis"
            )
        if math.prod(s // stride for s in size) < 2:
            raise ValueError(
                f"MIM view size {size} must be at least {2 * stride} on one axis: its instance-normed "
                "bottleneck needs more than one voxel"
            )
        random_patch_mask((1, 1, *size), self.mask_patch, mask_ratio)  # raises on a ratio that keeps all/none
        self.mask_ratio, self.augment, self.save_reconstructions = mask_ratio, augment, save_reconstructions
        self.mask_token = nn.Parameter(torch.zeros(1, self.in_channels, *(1,) * self.spatial_dims))
        conv = Conv[Conv.CONV, self.spatial_dims]
        self.head = conv(self.unet.decoder_channels[-1], self.in_channels, kernel_size=1)
        self.unet.final_conv.requires_grad_(False)  # the fine-tuning head replaces it

    @property
    def unet(self) -> UNetBackbone:
        """``self.backbone``, typed (a second attribute would register the module twice)."""
        return cast(UNetBackbone, self.backbone)

    @property
    def pretrained_decoder_blocks(self) -> int:
        return len(self.unet.decoder_blocks)

    def view_transform(self) -> Compose:
        return multi_view_transform([self.augment], self.spatial_dims)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [ReconstructionFigure()] if self.save_reconstructions else []

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["view_0"]  # (B, C, *S)
        pred, mask = self.predict(images)
        return {
            "loss": in_float32(masked_voxel_mse, pred, images, mask),
            "visible_mean": in_float32(masked_voxel_mse, visible_mean(images, mask), images, mask),
        }

    def predict(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The reconstruction ``(B, C, *S)`` of ``images`` with random patches masked, and the mask."""
        mask = random_patch_mask(images.shape, self.mask_patch, self.mask_ratio, generator).to(images)
        masked = images * (1 - mask) + self.mask_token * mask  # (B, C, *S)
        decoded = self.unet.decode(self.unet.forward_features(masked))  # (B, decoder_channels[-1], *S)
        return self.head(decoded), mask

    @torch.no_grad()
    def reconstruct(self, images: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The masked input (masked voxels NaN) and the visible voxels + predictions, for the figures."""
        pred, mask = self.predict(images, torch.Generator().manual_seed(seed))
        return images.masked_fill(mask.bool(), float("nan")), torch.where(mask.bool(), pred, images)
