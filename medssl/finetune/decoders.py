"""Segmentation decoders over a backbone's ``forward_features`` levels, built from MONAI blocks, 2D and 3D.

- CNN backbones (ResNets): a U-Net decoder; each ``UnetrUpBlock`` upsamples by the measured ratio between
  two levels (1 where a level keeps the grid, e.g. ``small_input``) and a full-resolution skip from the input.
- ViTs: UNETR; intermediate token grids are projected up by ``UnetrPrUpBlock`` to the decoder's resolutions.
- Encoder-decoder backbones (``unet``): the backbone's own (pretrained) decoder plus a 1x1 conv head.

- [0]: U-Net, 2015, https://arxiv.org/abs/1505.04597
- [1]: UNETR, 2021, https://arxiv.org/abs/2103.10504
"""

from __future__ import annotations

import itertools
import math
from typing import cast

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from torch import Tensor, nn

from medssl.backbones import Backbone, EncoderDecoder
from medssl.backbones.vit import ViTBackbone

_PROBE_SIZE = 64  # per axis; enough for a total stride up to 64 (ResNets: 32)


class UNetDecoder(nn.Module):
    """U-Net decoder for a CNN pyramid: ``UnetrUpBlock`` per level (out = the skip's channels), then 1x1 conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (for the full-resolution skip block).
        feature_channels: channels of the backbone levels, fine to coarse.
        factors: per level (fine to coarse) its upsampling ratio per axis to the next finer level, the
            first one relative to the input.
        num_classes: output channels.
        feature_size: channels of the full-resolution skip and of the last decoder block.
        norm_name: MONAI norm name of the conv blocks.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        feature_channels: list[int],
        factors: list[tuple[int, ...]],
        num_classes: int,
        feature_size: int = 16,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        self.input_block = UnetrBasicBlock(
            spatial_dims, in_channels, feature_size, kernel_size=3, stride=1, norm_name=norm_name
        )
        outs = [feature_size, *feature_channels[:-1]]  # each up block's output = its skip's channels
        self.up_blocks = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims,
                cin,
                cout,
                kernel_size=3,
                upsample_kernel_size=factor,
                norm_name=norm_name,
            )
            for cin, cout, factor in zip(feature_channels, outs, factors, strict=True)
        )
        self.out = UnetOutBlock(spatial_dims, feature_size, num_classes)

    def forward(self, x: Tensor, features: list[Tensor]) -> Tensor:
        skips = [self.input_block(x), *features[:-1]]  # fine to coarse, (B, C_i, *S_i)
        y = features[-1]  # (B, C_last, *S_last)
        for block, skip in zip(reversed(self.up_blocks), reversed(skips), strict=True):
            y = block(y, skip)  # (B, C_skip, *S_skip)
        return self.out(y)  # (B, num_classes, *S)


class UNETRDecoder(nn.Module):
    """UNETR decoder over ViT token grids at ``/p`` (``p = 2**k``): skips at ``/2**s`` for ``s < k``.

    Slot ``s`` (``1 <= s < k``) takes an intermediate level, shallow levels going to fine slots (UNETR: blocks
    3, 6, 9 of 12 at /2, /4, /8 for p = 16), projected by ``UnetrPrUpBlock`` to ``feature_size * 2**s``
    channels; slot 0 is a conv block on the input. The last level is the bottleneck.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        hidden_size: int,
        num_levels: int,
        patch_size: int,
        num_classes: int,
        feature_size: int = 16,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        k = int(math.log2(patch_size))
        if patch_size < 2 or 2**k != patch_size:
            raise ValueError(f"UNETR decoder needs a power-of-2 patch_size >= 2, got {patch_size}")
        intermediate = max(num_levels - 1, 1)
        self.slot_levels = [
            min((s - 1) * intermediate // max(k - 1, 1), intermediate - 1) for s in range(1, k)
        ]
        self.input_block = UnetrBasicBlock(
            spatial_dims, in_channels, feature_size, kernel_size=3, stride=1, norm_name=norm_name
        )
        self.projections = nn.ModuleList(
            UnetrPrUpBlock(
                spatial_dims,
                hidden_size,
                feature_size * 2**s,
                num_layer=k - 1 - s,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=norm_name,
            )
            for s in range(1, k)
        )
        widths = [feature_size * 2**s for s in range(k)] + [hidden_size]  # fine to coarse
        self.up_blocks = nn.ModuleList(
            UnetrUpBlock(
                spatial_dims, widths[s + 1], widths[s], 3, upsample_kernel_size=2, norm_name=norm_name
            )
            for s in range(k)
        )
        self.out = UnetOutBlock(spatial_dims, feature_size, num_classes)

    def forward(self, x: Tensor, features: list[Tensor]) -> Tensor:
        intermediate = features[:-1] or features[-1:]  # (B, D, *grid) each
        skips = [self.input_block(x)] + [
            proj(intermediate[level]) for proj, level in zip(self.projections, self.slot_levels, strict=True)
        ]  # slot s: (B, feature_size * 2**s, *S / 2**s)
        y = features[-1]  # (B, D, *grid)
        for block, skip in zip(reversed(self.up_blocks), reversed(skips), strict=True):
            y = block(y, skip)
        return self.out(y)  # (B, num_classes, *S)


class DecoderHead(nn.Module):
    """1x1 conv head on an encoder-decoder backbone's own decoder output (the last entry of ``features``)."""

    def __init__(self, *, spatial_dims: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.out = UnetOutBlock(spatial_dims, in_channels, num_classes)

    def forward(self, x: Tensor, features: list[Tensor]) -> Tensor:
        return self.out(features[-1])  # (B, num_classes, *S)


class SegmentationNet(nn.Module):
    """Backbone + decoder: ``(B, C, *S) -> (B, num_classes, *S)``.

    ``size_divisor`` is what every input's spatial size must be a multiple of (ViTs: exactly ``img_size``).
    For encoder-decoder backbones the backbone's ``decode`` runs first and its unused plain-network head
    (``final_conv``) is frozen, so optimisers and DDP never see a parameter without a gradient.
    """

    def __init__(self, backbone: Backbone, *, num_classes: int, feature_size: int = 16) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder, self.size_divisor = build_decoder(
            backbone, num_classes=num_classes, feature_size=feature_size
        )
        final_conv = getattr(backbone, "final_conv", None)
        if backbone.is_encoder_decoder and isinstance(final_conv, nn.Module):
            final_conv.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_size(tuple(x.shape[2:]))
        features = self.backbone.forward_features(x)  # fine to coarse
        if self.backbone.is_encoder_decoder:
            features = [cast(EncoderDecoder, self.backbone).decode(features)]  # (B, C_dec, *S)
        return self.decoder(x, features)

    def check_size(self, size: tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``size`` fits the network (a multiple of ``size_divisor``)."""
        name = self.backbone.name
        if isinstance(self.backbone, ViTBackbone):
            if size != self.size_divisor:
                raise ValueError(
                    f"{name}: input (patch) size must equal img_size {self.size_divisor}, got {size}"
                )
        elif any(s % d for s, d in zip(size, self.size_divisor, strict=True)):
            raise ValueError(
                f"{name} segmentation: input (patch) size {size} must be a multiple of {self.size_divisor} "
                "on every axis (the backbone's total stride)"
            )
        elif (
            self.backbone.is_encoder_decoder
            and min(s // d for s, d in zip(size, self.size_divisor, strict=True)) < 2
        ):
            smallest = tuple(2 * d for d in self.size_divisor)
            raise ValueError(
                f"{name} segmentation: input (patch) size {size} must be at least {smallest}: "
                "its instance-normed bottleneck needs 2 voxels per axis"
            )


def build_decoder(
    backbone: Backbone, *, num_classes: int, feature_size: int = 16
) -> tuple[nn.Module, tuple[int, ...]]:
    """The decoder suited to ``backbone`` and the size divisor its inputs need, per axis."""
    dims = backbone.spatial_dims
    if backbone.is_encoder_decoder:
        channels = cast(EncoderDecoder, backbone).decoder_channels[-1]
        head = DecoderHead(spatial_dims=dims, in_channels=channels, num_classes=num_classes)
        return head, (2 ** (len(backbone.feature_channels) - 1),) * dims
    if isinstance(backbone, ViTBackbone):
        patch = set(backbone.patch_size)
        if len(patch) != 1:
            raise ValueError(
                f"{backbone.name}: the UNETR decoder needs one patch_size on every axis, got {patch}"
            )
        decoder = UNETRDecoder(
            spatial_dims=dims,
            in_channels=backbone.in_channels,
            hidden_size=backbone.num_features,
            num_levels=len(backbone.feature_channels),
            patch_size=patch.pop(),
            num_classes=num_classes,
            feature_size=feature_size,
        )
        return decoder, tuple(backbone.img_size)
    factors = level_factors(backbone)
    cnn = UNetDecoder(
        spatial_dims=dims,
        in_channels=backbone.in_channels,
        feature_channels=list(backbone.feature_channels),
        factors=factors,
        num_classes=num_classes,
        feature_size=feature_size,
    )
    return cnn, tuple(math.prod(f[axis] for f in factors) for axis in range(dims))


def level_factors(backbone: Backbone) -> list[tuple[int, ...]]:
    """Per level (fine to coarse), the grid ratio per axis to the next finer level (the first: to the input).

    Measured by one no-grad forward of a ``64**dims`` probe in eval mode (batch-norm statistics untouched).
    """
    probe = torch.zeros(1, backbone.in_channels, *(_PROBE_SIZE,) * backbone.spatial_dims)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        shapes = [tuple(probe.shape[2:])] + [tuple(f.shape[2:]) for f in backbone.forward_features(probe)]
    backbone.train(was_training)
    factors = []
    for finer, coarser in itertools.pairwise(shapes):
        ratio = tuple(a // b for a, b in zip(finer, coarser, strict=True))
        if any(a != r * b for a, b, r in zip(finer, coarser, ratio, strict=True)):
            raise ValueError(
                f"{backbone.name}: feature grids {shapes} are not integer multiples of each other"
            )
        factors.append(ratio)
    return factors
