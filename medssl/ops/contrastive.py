"""Contrastive losses with several positives per anchor, as plain functions on embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def position_positives(positions: Tensor | None, batch_size: int, threshold: float) -> Tensor:
    """``(B, B)`` bool mask: ``i`` and ``j`` are positives when ``i == j`` or their normalised positions
    (e.g. slice index / number of slices, in [0, 1]) differ by at most ``threshold``.

    Without positions (``None`` or any NaN) only the instance itself is a positive.
    """
    eye = torch.eye(batch_size, dtype=torch.bool)
    if positions is None or threshold <= 0 or torch.isnan(positions).any():
        return eye if positions is None else eye.to(positions.device)
    near = (positions.view(-1, 1) - positions.view(1, -1)).abs() <= threshold
    return near | eye.to(positions.device)


def multi_positive_info_nce(a: Tensor, b: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between two batches of embeddings with a positive mask.

    ``a``, ``b``: ``(..., B, D)`` (leading dims, e.g. grid locations, are independent problems);
    ``positives``: ``(B, B)`` bool, ``positives[i, j]`` means ``a_i`` and ``b_j`` should match. The loss of an
    anchor is the mean of ``-log softmax`` over its positives (SupCon "out" form); with an identity mask this
    is the usual InfoNCE / NT-Xent across the two views.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.transpose(-1, -2) / temperature  # (..., B, B)
    weights = positives.to(logits.dtype) / positives.sum(dim=-1, keepdim=True)  # rows sum to 1
    weights_t = positives.T.to(logits.dtype) / positives.T.sum(dim=-1, keepdim=True)
    loss_a = -(weights * F.log_softmax(logits, dim=-1)).sum(-1)  # a_i against all b_j
    loss_b = -(weights_t * F.log_softmax(logits.transpose(-1, -2), dim=-1)).sum(-1)  # b_j against all a_i
    return (loss_a.mean() + loss_b.mean()) / 2
