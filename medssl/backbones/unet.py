"""MONAI ``BasicUNet`` as an encoder-decoder backbone: ``unet``.

- [0]: U-Net, 2015, https://arxiv.org/abs/1505.04597
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.networks.nets import BasicUNet
from torch import Tensor, nn

from medssl.backbones.base import Backbone
from medssl.backbones.registry import BACKBONES


class UNetBackbone(Backbone, BasicUNet):
    """MONAI ``BasicUNet``: a 5-level encoder plus 4 upsampling blocks that JCL and segmentation reuse.

    ``forward_features`` returns the 5 encoder levels ``conv_0, down_1..down_4`` (full, 1/2, ..., 1/16
    resolution; ``features[0..4]`` channels). ``pool`` is the global average of ``down_4``. ``decode`` runs
    ``upcat_4, upcat_3, upcat_2, upcat_1`` with the matching skips, each doubling the grid. ``final_conv`` is
    kept only so ``state_dict`` keys match the plain network; neither ``pool`` nor ``decode`` uses it.
    """

    monai_class = "monai.networks.nets.BasicUNet"
    is_encoder_decoder = True

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        features: list[int],
        out_channels: int,
        channels_last: bool = False,
    ) -> None:
        kwargs: dict[str, Any] = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": features,
        }
        super().__init__(**kwargs)
        self._monai_kwargs = kwargs
        self.name = "unet"
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels = features[:5]
        self.num_features = features[4]
        self.decoder_channels = [features[3], features[2], features[1], features[5]]
        if channels_last:
            self.use_channels_last()

    @property
    def decoder_blocks(self) -> list[nn.Module]:
        """Upsampling blocks, coarse to fine (a plain list: they are registered once, as ``upcat_*``)."""
        return [self.upcat_4, self.upcat_3, self.upcat_2, self.upcat_1]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        x0 = self.conv_0(self.channels_last_input(x))  # (B, f0, *S)
        x1 = self.down_1(x0)  # (B, f1, *S/2)
        x2 = self.down_2(x1)  # (B, f2, *S/4)
        x3 = self.down_3(x2)  # (B, f3, *S/8)
        x4 = self.down_4(x3)  # (B, f4, *S/16)
        return [x0, x1, x2, x3, x4]

    def pool(self, x: Tensor) -> Tensor:
        x4 = self.forward_features(x)[-1]
        return x4.mean(dim=tuple(range(2, x4.ndim)))  # (B, f4)

    def decode(self, features: list[Tensor], num_blocks: int | None = None) -> Tensor:
        """Run the first ``num_blocks`` decoder blocks (all 4 if None; 0 returns the bottleneck).

        Returns ``(B, decoder_channels[num_blocks - 1], *bottleneck * 2**num_blocks)``, before ``final_conv``.
        """
        blocks = self.decoder_blocks
        if len(features) != len(blocks) + 1:
            raise ValueError(
                f"unet.decode expects the {len(blocks) + 1} forward_features maps, got {len(features)}"
            )
        n = len(blocks) if num_blocks is None else num_blocks
        if not 0 <= n <= len(blocks):
            raise ValueError(f"unet.decode: num_blocks must be in 0..{len(blocks)}, got {num_blocks}")
        x = features[-1]
        for block, skip in zip(blocks[:n], features[-2::-1], strict=False):
            x = block(x, skip)  # (B, C_up, *2 * spatial)
        return x


@BACKBONES.register("unet")
def unet(
    *,
    spatial_dims: int,
    in_channels: int,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    out_channels: int = 2,
    channels_last: bool = False,
) -> UNetBackbone:
    """Build the U-Net; ``features`` are MONAI's 6 widths (5 encoder levels + last decoder block).

    ``out_channels`` only sizes the unused ``final_conv`` (kept for key compatibility with ``BasicUNet``).
    ``channels_last`` stores weights and activations NHWC/NDHWC (a speed switch, no effect on results).
    """
    widths = [int(f) for f in features]
    if len(widths) != 6 or min(widths) < 1:
        raise ValueError(f"unet: features must be 6 positive ints, got {features!r}")
    return UNetBackbone(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        features=widths,
        out_channels=out_channels,
        channels_last=channels_last,
    )
