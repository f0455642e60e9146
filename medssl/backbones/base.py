"""The backbone contract shared by every registered network.

A backbone is a MONAI network class with this mixin in front of it (``class X(Backbone, monai.ResNet)``), so
its ``state_dict`` keys are exactly those of the plain MONAI network and exported weights load into it with
no renaming. The mixin adds no modules, parameters or buffers; it only adds methods and plain attributes.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """An ``nn.Module`` with multi-level features, a pooled representation and a plain-MONAI twin.

    Subclasses set ``name``, ``spatial_dims``, ``in_channels``, ``num_features`` and ``feature_channels``
    in ``__init__``, store the plain network's constructor kwargs in ``_monai_kwargs``, and implement
    ``forward_features`` and ``pool``. ``forward(x)`` is ``pool(x)``.
    """

    monai_class: str = ""  # import path of the wrapped MONAI class, e.g. "monai.networks.nets.ResNet"
    is_encoder_decoder: bool = False
    channels_last: bool = False  # weights and inputs in NHWC / NDHWC layout (``use_channels_last``)

    name: str
    spatial_dims: int
    in_channels: int
    num_features: int  # channels of the coarsest feature map == size of the pooled vector
    feature_channels: list[int]  # channels of each level returned by forward_features, fine to coarse
    _monai_kwargs: dict[str, Any]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Feature maps ``(B, C_i, *spatial_i)`` from fine to coarse, coarsest last."""
        raise NotImplementedError

    def pool(self, x: Tensor) -> Tensor:
        """Global representation ``(B, num_features)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)

    def use_channels_last(self) -> None:
        """Store the weights channels-last (NHWC / NDHWC); ``channels_last_input`` converts the input.

        oneDNN (CPU) and cuDNN (GPU, tensor cores) run convolutions fastest in this layout, most of all in
        bf16/fp16. Exports and ``state_dict`` copies are made contiguous, so nothing outside notices.
        """
        self.channels_last = True
        self.to(memory_format=channels_last_format(self.spatial_dims))

    def channels_last_input(self, x: Tensor) -> Tensor:
        """``x`` in the backbone's memory layout (unchanged unless ``use_channels_last`` was called)."""
        if not self.channels_last:
            return x
        return x.contiguous(memory_format=channels_last_format(self.spatial_dims))

    def monai_spec(self) -> tuple[str, dict[str, Any]]:
        """Import path of the plain MONAI class and its JSON-serialisable constructor kwargs."""
        return self.monai_class, copy.deepcopy(self._monai_kwargs)

    def plain_network(self) -> nn.Module:
        """A fresh plain MONAI network into which ``self.state_dict()`` loads with ``strict=True``."""
        path, kwargs = self.monai_spec()
        module_name, class_name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), class_name)
        net: nn.Module = cls(**kwargs)
        return net


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last`` for 2D (4-D tensors), ``torch.channels_last_3d`` for 3D (5-D tensors)."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


@runtime_checkable
class EncoderDecoder(Protocol):
    """Extra surface of encoder-decoder backbones (``is_encoder_decoder = True``), e.g. ``unet``."""

    decoder_channels: list[int]  # output channels of each decoder block, coarse to fine

    @property
    def decoder_blocks(self) -> list[nn.Module]:
        """The upsampling blocks, coarse to fine (already registered once under their MONAI names)."""
        ...

    def decode(self, features: list[Tensor], num_blocks: int | None = None) -> Tensor:
        """Run the first ``num_blocks`` decoder blocks (all if None) on ``forward_features`` output."""
        ...
