"""MONAI ``ViT`` (no classification head) as a backbone: ``vit_tiny``, ``vit_small``, ``vit_base``.

- [0]: ViT, 2020, https://arxiv.org/abs/2010.11929
- [1]: UNETR (multi-depth ViT features), 2021, https://arxiv.org/abs/2103.10504
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.networks.nets import ViT
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from medssl.backbones.base import Backbone
from medssl.backbones.registry import BACKBONES

# name -> (hidden_size, num_layers, num_heads, mlp_dim)
_ARCHS: dict[str, tuple[int, int, int, int]] = {
    "vit_tiny": (192, 12, 3, 768),
    "vit_small": (384, 12, 6, 1536),
    "vit_base": (768, 12, 12, 3072),
}
_NUM_LEVELS = 4


def _per_axis(name: str, key: str, value: int | Sequence[int], spatial_dims: int) -> list[int]:
    sizes = [int(value)] * spatial_dims if isinstance(value, int) else [int(v) for v in value]
    if len(sizes) != spatial_dims or min(sizes) < 1:
        raise ValueError(
            f"{name}: {key} must be a positive int or {spatial_dims} positive ints, got {value!r}"
        )
    return sizes


def run_blocks(blocks: Iterable[nn.Module], tokens: Tensor, recompute: bool = False) -> list[Tensor]:
    """Each block's output in turn; with ``recompute`` (and autograd on) only block inputs are kept and the
    blocks run again in the backward pass (``torch.utils.checkpoint``)."""
    recompute = recompute and torch.is_grad_enabled()
    hidden = []
    for block in blocks:
        tokens = checkpoint(block, tokens, use_reentrant=False) if recompute else block(tokens)
        hidden.append(tokens)
    return hidden


class ViTBackbone(Backbone, ViT):
    """MONAI ``ViT`` with ``classification=False`` (no cls token).

    ``forward_features`` returns the tokens of ``min(4, num_layers)`` evenly spaced blocks (blocks 3, 6, 9, 12
    of a 12-layer ViT, UNETR style) reshaped to the patch grid ``(B, D, *grid)``; the last level is the final
    block after the final ``norm``. ``pool`` is the mean of those final normed tokens. Inputs must have
    exactly ``img_size`` (learned position embeddings). Each block's ``norm_cross_attn`` (built by MONAI
    even without cross-attention, never used) is frozen; its weights stay in the state_dict.

    With ``grad_checkpointing`` the blocks keep only their inputs during a training forward and recompute
    the rest in the backward pass (``torch.utils.checkpoint``): less activation memory for ~30 % more
    compute. It is a runtime switch, not part of the MONAI network's kwargs.
    """

    monai_class = "monai.networks.nets.ViT"

    def __init__(
        self,
        *,
        name: str,
        spatial_dims: int,
        in_channels: int,
        img_size: list[int],
        patch_size: list[int],
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float,
        qkv_bias: bool,
        pos_embed_type: str,
        grad_checkpointing: bool = False,
    ) -> None:
        kwargs: dict[str, Any] = {
            "in_channels": in_channels,
            "img_size": img_size,
            "patch_size": patch_size,
            "hidden_size": hidden_size,
            "mlp_dim": mlp_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "proj_type": "conv",
            "pos_embed_type": pos_embed_type,
            "classification": False,
            "dropout_rate": dropout_rate,
            "spatial_dims": spatial_dims,
            "qkv_bias": qkv_bias,
        }
        super().__init__(**kwargs)
        self._monai_kwargs = kwargs
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.img_size = tuple(img_size)
        self.patch_size = tuple(patch_size)
        self.grid_size = tuple(s // p for s, p in zip(img_size, patch_size, strict=True))
        levels = min(_NUM_LEVELS, num_layers)
        self.feature_blocks = [(i + 1) * num_layers // levels - 1 for i in range(levels)]  # 0-based
        self.num_features = hidden_size
        self.feature_channels = [hidden_size] * levels
        self.grad_checkpointing = grad_checkpointing
        for block in self.blocks:  # MONAI always builds this LayerNorm; it is unused without cross-attention
            block.norm_cross_attn.requires_grad_(False)  # frozen so DDP/optimisers never see a dead parameter

    def _encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Final normed tokens ``(B, L, D)`` and every block's output tokens."""
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"{self.name}: expected input spatial size {self.img_size}, got {tuple(x.shape)}"
            )
        hidden = self.run_blocks(self.patch_embedding(x))  # each (B, L, D)
        return self.norm(hidden[-1]), hidden

    def run_blocks(self, tokens: Tensor) -> list[Tensor]:
        """Every transformer block's output tokens ``(B, L, D)``, checkpointed when asked and training."""
        return run_blocks(self.blocks, tokens, recompute=self.grad_checkpointing and self.training)

    def _to_grid(self, tokens: Tensor) -> Tensor:
        return tokens.transpose(1, 2).reshape(
            tokens.shape[0], tokens.shape[2], *self.grid_size
        )  # (B, D, *grid)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        normed, hidden = self._encode(x)
        levels = [hidden[i] for i in self.feature_blocks[:-1]] + [normed]
        return [self._to_grid(t) for t in levels]

    def pool(self, x: Tensor) -> Tensor:
        return self._encode(x)[0].mean(dim=1)  # (B, D)


def _make_builder(name: str, hidden: int, layers: int, heads: int, mlp: int) -> Callable[..., ViTBackbone]:
    def build(
        *,
        spatial_dims: int,
        in_channels: int,
        img_size: int | Sequence[int],
        patch_size: int | Sequence[int] = 16,
        hidden_size: int = hidden,
        num_layers: int = layers,
        num_heads: int = heads,
        mlp_dim: int = mlp,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        pos_embed_type: str = "learnable",
        grad_checkpointing: bool = False,
    ) -> ViTBackbone:
        """Build the ViT; ``img_size`` must be divisible by ``patch_size`` on every axis (anisotropic ok).

        ``qkv_bias`` defaults to MONAI's False so weights also load into MONAI's UNETR encoder.
        ``grad_checkpointing`` recomputes the blocks in the backward pass (memory saver for 3D).
        """
        img = _per_axis(name, "img_size", img_size, spatial_dims)
        patch = _per_axis(name, "patch_size", patch_size, spatial_dims)
        bad = [axis for axis, (s, p) in enumerate(zip(img, patch, strict=True)) if s % p]
        if bad:
            raise ValueError(
                f"{name}: img_size {tuple(img)} is not divisible by patch_size {tuple(patch)} "
                f"on axis {', '.join(map(str, bad))}"
            )
        if hidden_size % num_heads:
            raise ValueError(f"{name}: hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        return ViTBackbone(
            name=name,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            img_size=img,
            patch_size=patch,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout_rate=dropout_rate,
            qkv_bias=qkv_bias,
            pos_embed_type=pos_embed_type,
            grad_checkpointing=grad_checkpointing,
        )

    build.__name__ = build.__qualname__ = name
    return build


for _name, _arch in _ARCHS.items():
    BACKBONES.register(_name)(_make_builder(_name, *_arch))
