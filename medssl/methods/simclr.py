"""SimCLR: two augmented views of each image, NT-Xent over the batch (and over all ranks under DDP).

- [0]: SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from monai.transforms import Compose
from torch import Tensor

from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.precision import in_float32
from medssl.transforms.views import ViewAugment, check_region, multi_view_transform


@METHODS.register("simclr")
class SimCLR(SSLMethod):
    """SimCLR with lightly's projection head and NT-Xent loss.

    Args:
        temperature: NT-Xent temperature.
        hidden_dim: width of the projection MLP.
        projection_dim: size of the projected embedding the loss compares.
        augment: how each of the two views is made.
        view_region: side fraction of one random window per image that both views are cut from (their
            crop scales are then fractions of the window): below 1, small crops of a large image overlap.
        **base: the ``SSLMethod`` options (backbone, spatial_dims, optimiser, ...).
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        hidden_dim: int = 512,
        projection_dim: int = 128,
        augment: ViewAugment = ViewAugment(),
        view_region: float = 1.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.augment, self.view_region = augment, check_region(view_region)
        self.projection_head = SimCLRProjectionHead(self.backbone.num_features, hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def view_transform(self) -> Compose:
        return multi_view_transform([self.augment, self.augment], self.spatial_dims, region=self.view_region)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        views = torch.cat([batch["view_0"], batch["view_1"]])  # (2B, C, *spatial): one forward pass
        z0, z1 = self.projection_head(self.backbone(views)).chunk(2)  # (B, projection_dim) each
        return {"loss": in_float32(self.criterion, z0, z1)}
