"""MONAI ``ResNet`` (no fc) as a backbone: ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``.

- [0]: ResNet, 2015, https://arxiv.org/abs/1512.03385
- [1]: 3D ResNets, 2017, https://arxiv.org/abs/1711.09577
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.networks.nets import ResNet
from monai.networks.nets.resnet import get_inplanes
from torch import Tensor

from medssl.backbones.base import Backbone
from medssl.backbones.registry import BACKBONES

_ARCHS: dict[str, tuple[str, list[int]]] = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


class ResNetBackbone(Backbone, ResNet):
    """MONAI ``ResNet`` with ``feed_forward=False``.

    ``forward_features`` returns 5 levels, like MONAI's ``ResNetFeatures``: the stem (conv1 + bn1 + act,
    before the max-pool) and the outputs of layer1..layer4. ``pool`` is the network's own global average
    pool of layer4, i.e. exactly what the plain network returns.

    Shortcuts are type "B" (1x1 conv + norm, no conv bias) at every depth: MONAI's type "A" shortcut
    detaches the residual (``out.data``), which would block gradients.
    """

    monai_class = "monai.networks.nets.ResNet"

    def __init__(
        self,
        *,
        name: str,
        spatial_dims: int,
        in_channels: int,
        block: str,
        layers: list[int],
        widen_factor: float,
        conv1_t_size: int | list[int],
        conv1_t_stride: int | list[int],
        no_max_pool: bool,
        channels_last: bool = False,
    ) -> None:
        planes = [int(c * widen_factor) for c in get_inplanes()]
        if planes[0] < 1:
            raise ValueError(f"{name}: widen_factor={widen_factor} gives zero channels; use >= {1 / 64}")
        kwargs: dict[str, Any] = {
            "block": block,
            "layers": list(layers),
            "block_inplanes": get_inplanes(),
            "spatial_dims": spatial_dims,
            "n_input_channels": in_channels,
            "conv1_t_size": conv1_t_size,
            "conv1_t_stride": conv1_t_stride,
            "no_max_pool": no_max_pool,
            "shortcut_type": "B",
            "widen_factor": widen_factor,
            "feed_forward": False,
            "bias_downsample": False,
        }
        super().__init__(**kwargs)
        self._monai_kwargs = kwargs
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        expansion = 4 if block == "bottleneck" else 1
        self.feature_channels = [planes[0]] + [p * expansion for p in planes]
        self.num_features = self.feature_channels[-1]
        if channels_last:
            self.use_channels_last()

    def forward_features(self, x: Tensor) -> list[Tensor]:
        x = self.act(self.bn1(self.conv1(self.channels_last_input(x))))  # (B, C0, *S / conv1_t_stride)
        features = [x]
        if not self.no_max_pool:
            x = self.maxpool(x)  # halves the grid
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)  # layer2..4 halve the grid
            features.append(x)
        return features

    def pool(self, x: Tensor) -> Tensor:
        return self.avgpool(self.forward_features(x)[-1]).flatten(1)  # (B, num_features)


def _as_option(value: int | Sequence[int]) -> int | list[int]:
    return value if isinstance(value, int) else [int(v) for v in value]


def _make_builder(name: str, block: str, layers: list[int]) -> Callable[..., ResNetBackbone]:
    def build(
        *,
        spatial_dims: int,
        in_channels: int,
        widen_factor: float = 1.0,
        conv1_t_size: int | Sequence[int] = 7,
        conv1_t_stride: int | Sequence[int] = 2,
        no_max_pool: bool = False,
        small_input: bool = False,
        channels_last: bool = False,
    ) -> ResNetBackbone:
        """Build the ResNet; ``small_input=True`` means a 3x3 stride-1 stem and no max-pool.

        ``small_input`` is for tiny images (e.g. 28 px MedMNIST), where the default stem would shrink the
        grid 4x before layer1. It cannot be combined with a non-default ``conv1_t_size``/``conv1_t_stride``.
        ``channels_last`` stores weights and activations NHWC/NDHWC (a speed switch, no effect on results).
        """
        if small_input:
            if conv1_t_size != 7 or conv1_t_stride != 2:
                raise ValueError(
                    f"{name}: small_input=True sets conv1_t_size=3, conv1_t_stride=1, no_max_pool=True; "
                    f"do not also pass conv1_t_size={conv1_t_size!r} / conv1_t_stride={conv1_t_stride!r}"
                )
            conv1_t_size, conv1_t_stride, no_max_pool = 3, 1, True
        return ResNetBackbone(
            name=name,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            block=block,
            layers=layers,
            widen_factor=widen_factor,
            conv1_t_size=_as_option(conv1_t_size),
            conv1_t_stride=_as_option(conv1_t_stride),
            no_max_pool=no_max_pool,
            channels_last=channels_last,
        )

    build.__name__ = build.__qualname__ = name
    return build


for _name, (_block, _layers) in _ARCHS.items():
    BACKBONES.register(_name)(_make_builder(_name, _block, _layers))
