"""Frozen features: embed every image of a loader once with a backbone in eval mode."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module, batches: Iterable[dict[str, Tensor]], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``(features (N, D), labels (N,) or (N, K))`` of every ``{"image", "label"}`` batch.

    The backbone runs in eval mode (batch-norm statistics frozen) and is put back in its previous mode.
    """
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for batch in batches:
            features.append(backbone(batch["image"].to(device)).flatten(1).float().cpu())
            labels.append(torch.as_tensor(batch["label"]).cpu())
    finally:
        backbone.train(was_training)
    if not features:
        raise ValueError("no batches to embed")
    return torch.cat(features), torch.cat(labels)
