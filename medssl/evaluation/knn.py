"""Weighted kNN on frozen features, with class scores (so that AUROC can be computed).

lightly's ``knn_predict`` returns the classes ranked, not their scores; this is the same rule (cosine
similarity, the ``k`` nearest, weights ``exp(sim / t)``) returning the normalised vote of each class.

- [0]: Instance discrimination kNN, 2018, https://arxiv.org/abs/1805.01978
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_scores(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Class scores ``(Q, num_classes)`` (rows sum to 1) for ``query (Q, D)`` from ``bank (N, D)``.

    ``bank_labels`` is ``(N,)`` class indices, or ``(N, num_classes)`` 0/1 vectors for multi-label data,
    whose scores are then the weighted share of neighbours carrying each label.
    """
    bank = F.normalize(bank.float(), dim=1)
    votes = (
        bank_labels.float() if bank_labels.ndim == 2 else F.one_hot(bank_labels.long(), num_classes).float()
    )
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query), chunk):  # (chunk, N) similarities at a time: bounded memory
        q = F.normalize(query[start : start + chunk].float(), dim=1)
        similarity, index = (q @ bank.T).topk(k, dim=1)  # (q, k)
        weight = (similarity / temperature).exp()  # (q, k)
        score = (weight.unsqueeze(-1) * votes[index]).sum(1)  # (q, C)
        scores.append(score / weight.sum(1, keepdim=True))
    return torch.cat(scores)
