"""JCL: asymmetric multi-level contrastive pretraining of a whole U-Net, encoder and decoder.

Both branches share the encoder. The dominant branch sees the view downsampled by ``scale`` and runs the
encoder plus the first ``k`` decoder blocks (``2**-k == scale``), which lands it on the grid of the auxiliary
branch's bottleneck (the full-resolution view, encoder only). Three losses meet on that grid:

- image level: pooled projections of the two branches, contrastive across the batch;
- pixel level: 1x1 projections, contrastive at every grid location, negatives = the same location in the
  other images (a random subset of locations when ``pixel_locations`` is set, to bound 3D memory);
- feature level: L1 between the full-resolution bottleneck downsampled by ``scale`` and the bottleneck of
  the downsampled view (scale equivariance of the encoder).

Positives widen to images whose normalised ``position`` differs by at most ``position_threshold`` when the
batch carries positions. Decoder blocks after the first ``k`` (and ``final_conv``) get no signal: they are
frozen, and the export marks only the first ``k`` blocks as pretrained.

- [0]: medssl design, "The SSL methods: JCL" (../shared/design/architecture.md)
- [1]: Positional contrastive learning, 2021, https://arxiv.org/abs/2106.09157
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils import dist
from monai.networks.layers import Conv
from monai.transforms import Compose
from torch import Tensor

from medssl.backbones.unet import UNetBackbone
from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.contrastive import multi_positive_info_nce, position_positives
from medssl.ops.precision import in_float32
from medssl.transforms.aligned import aligned_pair_transform
from medssl.transforms.views import ViewAugment, per_axis

#: The encoder of MONAI's BasicUNet halves the grid this many times.
ENCODER_DEPTH = 4


@METHODS.register("jcl")
class JCL(SSLMethod):
    """JCL over an encoder-decoder backbone (``unet``: MONAI ``BasicUNet``).

    Args:
        backbone: an encoder-decoder backbone.
        scale: downsampling of the dominant branch's view; a power of 1/2. Default 0.25 in 2D, 0.5 in 3D.
        temperature: temperature of the image- and pixel-level contrastive losses.
        weight_image, weight_pixel, weight_feature: loss weights; 0 switches a term off.
        projection_dim: size of the image- and pixel-level projections.
        hidden_dim: width of the image-level projection MLP.
        pixel_locations: grid locations sampled for the pixel loss per step (``None``: all).
        position_threshold: positions closer than this are positives too (0: instance positives only).
        augment: the spatial crop (applied once) and intensity changes (applied per view).
        **base: the ``SSLMethod`` options.
    """

    def __init__(
        self,
        *,
        backbone: str = "unet",
        scale: float | None = None,
        temperature: float = 0.1,
        weight_image: float = 1.0,
        weight_pixel: float = 0.5,
        weight_feature: float = 1.0,
        projection_dim: int = 128,
        hidden_dim: int = 256,
        pixel_locations: int | None = None,
        position_threshold: float = 0.0,
        augment: ViewAugment = ViewAugment(size=64, min_scale=0.5),
        **base: Any,
    ) -> None:
        super().__init__(backbone=backbone, **base)
        if not getattr(self.backbone, "is_encoder_decoder", False):
            raise ValueError(f"JCL needs an encoder-decoder backbone such as 'unet', got {backbone!r}")
        self.scale = scale if scale is not None else (0.25 if self.spatial_dims == 2 else 0.5)
        self.num_blocks = _decoder_blocks_for(self.scale, len(self.unet.decoder_blocks))
        _check_view_size(augment, self.scale, self.spatial_dims)
        self.augment, self.temperature = augment, temperature
        self.weights = {"image": weight_image, "pixel": weight_pixel, "feature": weight_feature}
        if not any(self.weights.values()):
            raise ValueError("JCL needs at least one non-zero loss weight (weight_image/pixel/feature)")
        self.pixel_locations, self.position_threshold = pixel_locations, position_threshold
        for block in self.unet.decoder_blocks[self.num_blocks :]:
            block.requires_grad_(False)
        self.unet.final_conv.requires_grad_(False)

        small_channels = self.unet.decoder_channels[self.num_blocks - 1]
        full_channels = self.unet.num_features
        conv = Conv[Conv.CONV, self.spatial_dims]
        self.image_head_small = SimCLRProjectionHead(small_channels, hidden_dim, projection_dim)
        self.image_head_full = SimCLRProjectionHead(full_channels, hidden_dim, projection_dim)
        self.pixel_head_small = conv(small_channels, projection_dim, kernel_size=1)
        self.pixel_head_full = conv(full_channels, projection_dim, kernel_size=1)

    @property
    def pretrained_decoder_blocks(self) -> int:
        return self.num_blocks

    @property
    def unet(self) -> UNetBackbone:
        """``self.backbone``, typed (a second attribute would register the module twice)."""
        return cast(UNetBackbone, self.backbone)

    def view_transform(self) -> Compose:
        return aligned_pair_transform(self.augment, self.scale, self.spatial_dims)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        full, small = batch["view_full"], batch["view_small"]  # (B, C, *S), (B, C, *S * scale)
        full_features = self.unet.forward_features(full)  # bottleneck: (B, F, *S / 16)
        small_features = self.unet.forward_features(small)  # bottleneck: (B, F, *S * scale / 16)
        decoded = self.unet.decode(small_features, self.num_blocks)  # (B, Cd, *S / 16): the shared grid
        bottleneck = full_features[-1]
        positives = position_positives(batch.get("position"), full.shape[0], self.position_threshold)
        positives = positives.to(full.device)

        terms: dict[str, Tensor] = {}
        if self.weights["image"]:
            z_small = self.image_head_small(_global_pool(decoded))  # (B, P)
            z_full = self.image_head_full(_global_pool(bottleneck))  # (B, P)
            terms["image"] = in_float32(multi_positive_info_nce, z_small, z_full, positives, self.temperature)
        if self.weights["pixel"]:
            p_small, p_full = self._pixel_projections(decoded, bottleneck)  # (L, B, P) each
            terms["pixel"] = in_float32(multi_positive_info_nce, p_small, p_full, positives, self.temperature)
        if self.weights["feature"]:
            terms["feature"] = in_float32(_scale_equivariance, small_features[-1], bottleneck)
        terms["loss"] = torch.stack([self.weights[name] * value for name, value in terms.items()]).sum()
        return terms

    def _pixel_projections(self, decoded: Tensor, bottleneck: Tensor) -> tuple[Tensor, Tensor]:
        """1x1 projections of both branches as ``(L, B, P)``, at the same (sampled) grid locations."""
        small = self.pixel_head_small(decoded).flatten(2).permute(2, 0, 1)  # (L, B, P)
        full = self.pixel_head_full(bottleneck).flatten(2).permute(2, 0, 1)  # (L, B, P)
        if self.pixel_locations is not None and self.pixel_locations < small.shape[0]:
            keep = torch.randperm(small.shape[0], device=small.device)[: self.pixel_locations]
            if dist.world_size() > 1:  # the same locations on every rank: negatives are gathered per location
                torch.distributed.broadcast(keep, src=0)
            small, full = small[keep], full[keep]
        return small, full


def _scale_equivariance(small: Tensor, full: Tensor) -> Tensor:
    """L1 between the small view's bottleneck and the full view's bottleneck downsampled to its grid."""
    return F.l1_loss(small, F.interpolate(full, size=small.shape[2:], mode="area"))


def _global_pool(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(2, x.ndim)))  # (B, C)


def _decoder_blocks_for(scale: float, available: int) -> int:
    k = -math.log2(scale) if scale > 0 else math.inf
    if not (k.is_integer() and 1 <= k <= available):
        valid = ", ".join(str(2.0**-i) for i in range(1, available + 1))
        raise ValueError(f"JCL scale must be one of {valid} (2**-k for k decoder blocks), got {scale}")
    return int(k)


def _check_view_size(augment: ViewAugment, scale: float, spatial_dims: int) -> None:
    """Both branches must meet on one grid, and InstanceNorm needs more than one bottleneck voxel."""
    multiple = int(2**ENCODER_DEPTH / scale)
    size = per_axis(augment.size, spatial_dims)
    if any(s % multiple for s in size) or math.prod(s // multiple for s in size) < 2:
        raise ValueError(
            f"JCL view size {size} must be a multiple of {multiple} on every axis (scale {scale}, "
            f"{ENCODER_DEPTH} pooling levels) and at least {2 * multiple} on one axis, so that both branches "
            "meet on one grid and the small view's bottleneck has more than one voxel"
        )
