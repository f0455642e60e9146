"""MoCo InfoNCE pieces as plain functions: queue logits, MoCHi hard negative mixing, v3 in-batch loss.

- [0]: MoCo, 2020, https://arxiv.org/abs/1911.05722
- [1]: MoCHi, 2020, https://arxiv.org/abs/2010.01028
- [2]: MoCo v3, 2021, https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.utils import dist
from torch import Tensor


def moco_logits(
    q: Tensor, k: Tensor, queue: Tensor, temperature: float, hard_negatives: Tensor | None = None
) -> Tensor:
    """InfoNCE logits ``(B, 1 + K [+ M])``: the positive key first (target 0), then the queue, then extras.

    Args:
        q: normalised queries ``(B, D)``.
        k: normalised positive keys ``(B, D)``.
        queue: normalised negative keys ``(K, D)`` shared by every query.
        temperature: the logits are divided by it.
        hard_negatives: optional normalised ``(B, M, D)``: ``M`` more negatives per query (MoCHi).
    """
    parts = [(q * k).sum(dim=1, keepdim=True), q @ queue.T]  # (B, 1), (B, K)
    if hard_negatives is not None:
        parts.append(torch.einsum("bd,bmd->bm", q, hard_negatives))  # (B, M)
    return torch.cat(parts, dim=1) / temperature


@torch.no_grad()
def mochi_negatives(
    q: Tensor,
    queue: Tensor,
    *,
    top_k: int,
    num_mix: int,
    num_query_mix: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Synthetic hard negatives ``(B, num_mix + num_query_mix, D)`` per query, normalised and detached.

    For each query the ``top_k`` queue entries most similar to it are the hard negatives. ``num_mix`` new
    negatives are ``a * n_i + (1 - a) * n_j`` for random hard ``n_i, n_j`` and ``a ~ U(0, 1)``;
    ``num_query_mix`` harder ones are ``b * q + (1 - b) * n_j`` with ``b ~ U(0, 0.5)`` ([1], section 4).
    Random draws, in order: ``i``, ``j``, ``a`` for the first kind, then ``j``, ``b`` for the second.
    """
    batch, dim = q.shape
    top_k = min(top_k, queue.shape[0])
    hard = queue[(q @ queue.T).topk(top_k, dim=1).indices]  # (B, top_k, D), hardest first

    def pick(count: int) -> Tensor:
        idx = torch.randint(top_k, (batch, count), generator=generator, device=q.device)
        return hard.gather(1, idx.unsqueeze(-1).expand(-1, -1, dim))  # (B, count, D)

    def uniform(count: int, high: float) -> Tensor:
        return high * torch.rand(batch, count, 1, generator=generator, device=q.device, dtype=q.dtype)

    n_i, n_j = pick(num_mix), pick(num_mix)
    a = uniform(num_mix, 1.0)
    mixed = a * n_i + (1 - a) * n_j  # (B, num_mix, D)
    n_j = pick(num_query_mix)
    b = uniform(num_query_mix, 0.5)
    query_mixed = b * q.unsqueeze(1) + (1 - b) * n_j  # (B, num_query_mix, D)
    return F.normalize(torch.cat([mixed, query_mixed], dim=1), dim=-1)


def in_batch_infonce(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3 InfoNCE ([2]) of queries ``(2B, D)``, both views stacked, and their keys ``(2B, D)``.

    Each half's queries are scored against that half's keys over all ranks; the mean over both halves.
    """
    losses = []
    for q_view, k_view in zip(q.chunk(2), k.chunk(2), strict=True):
        keys = torch.cat(dist.gather(k_view)) if dist.world_size() > 1 else k_view  # (B * ranks, D)
        logits = F.normalize(q_view, dim=1) @ F.normalize(keys, dim=1).T / temperature  # (B, B * ranks)
        labels = torch.arange(len(q_view), device=q.device) + dist.rank() * len(q_view)
        losses.append(F.cross_entropy(logits, labels))
    return torch.stack(losses).mean()
