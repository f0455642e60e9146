"""Contrastive losses with several positives per anchor, as plain functions on embeddings.

Under DDP both take part across ranks: the candidates of every anchor are the embeddings of all ranks
(gathered with gradients, lightly's ``dist.gather``), so two ranks with batch B train like one with 2B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.utils import concat_all_gather
from lightly.utils import dist
from torch import Tensor


def position_positives(positions: Tensor | None, batch_size: int, threshold: float) -> Tensor:
    """``(B, B * world_size)`` bool mask: row ``i`` is this rank's image ``i``, column ``j`` the ``j``-th
    image of all ranks (rank-major, as gathered); they are positives when they are the same image or their
    normalised positions (e.g. slice index / number of slices, in [0, 1]) differ by at most ``threshold``.

    Without positions (``None`` or any NaN on any rank) only the instance itself is a positive. One
    process: ``(B, B)``. The mask is symmetric over the whole batch, as ``multi_positive_info_nce`` needs.
    """
    device = positions.device if positions is not None else None
    eye = dist.eye_rank(batch_size).to(device)  # (B, B * world)
    if positions is None or threshold <= 0:
        return eye
    every = concat_all_gather(positions.contiguous()) if dist.world_size() > 1 else positions  # (B * world,)
    if torch.isnan(every).any():
        return eye
    near = (positions.view(-1, 1) - every.view(1, -1)).abs() <= threshold
    return near | eye


def multi_positive_info_nce(a: Tensor, b: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between two batches of embeddings with a positive mask.

    ``a``, ``b``: ``(..., B, D)`` (leading dims, e.g. grid locations, are independent problems);
    ``positives``: ``(B, B * world_size)`` bool from ``position_positives``, ``positives[i, j]`` means
    this rank's ``a_i`` and the ``j``-th gathered ``b`` should match (and, the mask being symmetric, this
    rank's ``b_i`` and the ``j``-th gathered ``a``). The loss of an anchor is the mean of ``-log softmax``
    over its positives (SupCon "out" form); with an identity mask this is the usual InfoNCE / NT-Xent
    across the two views. Under DDP the candidates are gathered from every rank.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    if dist.world_size() > 1:
        a_all, b_all = torch.cat(dist.gather(a), dim=-2), torch.cat(dist.gather(b), dim=-2)  # (..., B * W, D)
    else:
        a_all, b_all = a, b
    weights = positives.to(a.dtype) / positives.sum(dim=-1, keepdim=True)  # rows sum to 1
    loss_a = -(weights * F.log_softmax(a @ b_all.transpose(-1, -2) / temperature, dim=-1)).sum(-1)
    loss_b = -(weights * F.log_softmax(b @ a_all.transpose(-1, -2) / temperature, dim=-1)).sum(-1)
    return (loss_a.mean() + loss_b.mean()) / 2
