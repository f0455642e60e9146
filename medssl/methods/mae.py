"""MAE: mask most patches, encode only the visible ones, reconstruct the masked pixels with a light decoder.

- [0]: MAE, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import math
from typing import Any, cast

import pytorch_lightning as pl
import torch
from lightly.models.utils import get_at_index
from monai.networks.layers import trunc_normal_
from monai.transforms import Compose
from torch import Tensor, nn

from medssl.backbones.vit import ViTBackbone, run_blocks
from medssl.evaluation.reconstruction import ReconstructionFigure
from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.patches import num_visible, patchify, random_masking, unpatchify
from medssl.ops.precision import in_float32
from medssl.transforms.views import ViewAugment, multi_view_transform


def masked_patch_mse(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """Mean squared error over the patches where ``mask`` is 1; targets normalised per patch if asked."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum()


def flat_patches(target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """The no-learning reference: every patch flat, at 0 (its own mean once normalised) with ``norm_pix``,
    else at the image's mean over its visible (``mask`` 0) patches."""
    if norm_pix:
        return torch.zeros_like(target)
    visible = 1 - mask  # (B, L)
    return ((target.mean(-1) * visible).sum(1) / visible.sum(1)).view(-1, 1, 1).expand_as(target)


@METHODS.register("mae")
class MAE(SSLMethod):
    """Masked autoencoder on a registered ViT backbone (``vit_tiny/small/base``), 2D and 3D.

    The encoder runs on the visible patches only (``round(L * (1 - mask_ratio))`` per image): that is where
    the speed comes from. Patch sizes may be anisotropic in 3D, e.g. ``(4, 8, 8)``. Logged with the loss:
    ``flat_patches``, the loss of predicting every masked patch flat; only a loss below it is learning.

    Args:
        mask_ratio: share of patches removed per image; 0 trains a plain patch autoencoder (loss on all
            patches, the speed baseline of ``benchmarks/mae_efficiency.py``).
        norm_pix_loss: reconstruct each patch normalised by its own mean and variance.
        decoder_dim: width of the decoder transformer.
        decoder_depth: number of decoder blocks.
        decoder_heads: attention heads per decoder block.
        augment: how the single view is made; ``None``: weak (crop scale 0.7-1, flips, +-10 % intensity) at
            the ViT's ``img_size``. Its ``size`` must equal the ViT's ``img_size``.
        save_reconstructions: write ``<run dir>/reconstructions/epoch_XXX.png`` after each validation.
        **base: the ``SSLMethod`` options; ``backbone`` must be a ViT.
    """

    def __init__(
        self,
        *,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        augment: ViewAugment | None = None,
        save_reconstructions: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        vit = self.backbone
        if not isinstance(vit, ViTBackbone):
            raise ValueError(f"MAE needs a ViT backbone (vit_tiny, vit_small, vit_base), got {vit.name!r}")
        self.img_size, self.patch_size, self.grid_size = vit.img_size, vit.patch_size, vit.grid_size
        self.num_patches = math.prod(self.grid_size)
        num_visible(self.num_patches, mask_ratio)  # raises on a ratio that keeps nothing or masks nothing
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.save_reconstructions = save_reconstructions
        self.augment = self._checked_augment(augment)
        self.decoder_embed = nn.Linear(vit.num_features, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, decoder_dim))
        self.decoder_blocks = nn.Sequential(
            *[_decoder_block(decoder_dim, decoder_heads) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, math.prod(self.patch_size) * self.in_channels)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos_embed, std=0.02)

    def _checked_augment(self, augment: ViewAugment | None) -> ViewAugment:
        weak = ViewAugment(
            size=self.img_size, min_scale=0.7, intensity=0.1, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0
        )
        augment = augment or weak
        size = augment.size
        if ((size,) * self.spatial_dims if isinstance(size, int) else tuple(size)) != self.img_size:
            raise ValueError(
                f"MAE: augment.size {size} must equal the ViT img_size {self.img_size} "
                "(set model.init_args.augment.size or backbone_kwargs.img_size)"
            )
        return augment

    def view_transform(self) -> Compose:
        return multi_view_transform([self.augment], self.spatial_dims)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [ReconstructionFigure()] if self.save_reconstructions else []

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pred, target, mask = self.predict_patches(batch["view_0"])
        weights = mask if self.mask_ratio > 0 else torch.ones_like(mask)
        flat = flat_patches(target, mask, self.norm_pix_loss)
        return {
            "loss": in_float32(masked_patch_mse, pred, target, weights, self.norm_pix_loss),
            "flat_patches": in_float32(masked_patch_mse, flat, target, weights, self.norm_pix_loss),
        }

    def predict_patches(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Predicted and target patches ``(B, L, prod(patch) * C)`` and the mask ``(B, L)`` (1 = masked)."""
        if tuple(images.shape[2:]) != self.img_size:
            raise ValueError(f"MAE: expected views of size {self.img_size}, got {tuple(images.shape)}")
        ids_keep, mask, ids_restore = random_masking(
            images.shape[0], self.num_patches, self.mask_ratio, images.device, generator
        )
        latent = self.encode_visible(images, ids_keep)  # (B, L_keep, D)
        return self.decode(latent, ids_restore), patchify(images, self.patch_size), mask

    def encode_visible(self, images: Tensor, ids_keep: Tensor) -> Tensor:
        """Embed all patches (conv + position embeddings), keep ``ids_keep``, run the blocks on those only."""
        vit = cast(ViTBackbone, self.backbone)
        tokens = get_at_index(vit.patch_embedding(images), ids_keep)  # (B, L_keep, D)
        return vit.norm(vit.run_blocks(tokens)[-1])  # (B, L_keep, D)

    def decode(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Visible latents + mask tokens, back in patch order, to pixels ``(B, L, prod(patch) * C)``."""
        tokens = self.decoder_embed(latent)  # (B, L_keep, Dd)
        fill = self.mask_token.expand(tokens.shape[0], self.num_patches - tokens.shape[1], -1)
        tokens = (
            get_at_index(torch.cat([tokens, fill], dim=1), ids_restore) + self.decoder_pos_embed
        )  # (B, L, Dd)
        recompute = cast(ViTBackbone, self.backbone).grad_checkpointing and self.training  # as the encoder
        tokens = run_blocks(self.decoder_blocks, tokens, recompute)[-1]
        return self.decoder_pred(self.decoder_norm(tokens))

    @torch.no_grad()
    def reconstruct(self, images: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The masked input (masked patches NaN) and visible patches + de-normalised predictions."""
        generator = torch.Generator(images.device).manual_seed(seed)
        pred, target, mask = self.predict_patches(images, generator)
        if self.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
            pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(dim=-1, keepdim=True)
        mask = mask.unsqueeze(-1)  # (B, L, 1)
        args = (self.patch_size, self.grid_size, self.in_channels)
        masked = target.masked_fill(mask.bool(), float("nan"))
        return unpatchify(masked, *args), unpatchify(target * (1 - mask) + pred * mask, *args)


def _decoder_block(dim: int, heads: int) -> nn.Module:
    return nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
