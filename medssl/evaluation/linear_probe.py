"""Linear probe on frozen features: an L2-regularised linear classifier fitted by full-batch L-BFGS.

Features are standardised with the training set's mean and std; the L2 strength is picked on the
validation split from a small grid (by AUROC), as in the linear-evaluation protocols of SSL papers. Fitting
on cached features takes seconds, where a probe trained through the backbone would re-embed every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_auroc, multilabel_auroc

L2_GRID = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class LinearProbe:
    """A fitted probe: ``probe(features)`` gives class probabilities."""

    mean: Tensor
    std: Tensor
    head: nn.Linear
    multi_label: bool
    l2: float

    @torch.no_grad()
    def __call__(self, features: Tensor) -> Tensor:
        logits = self.head((features.float() - self.mean) / self.std)
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=1)


def fit_linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    num_classes: int,
    *,
    multi_label: bool = False,
    l2_grid: Sequence[float] = L2_GRID,
    max_iter: int = 200,
) -> LinearProbe:
    """Fit one probe per L2 strength on ``train`` ``(features, labels)``; keep the best on ``val``."""
    x, y = train
    mean, std = x.float().mean(0), x.float().std(0).clamp(min=1e-6)
    best: tuple[float, LinearProbe] | None = None
    for l2 in l2_grid:
        probe = LinearProbe(
            mean, std, _fit(x, y, num_classes, multi_label, l2, max_iter, mean, std), multi_label, l2
        )
        score = probe_auroc(probe(val[0]), val[1], num_classes, multi_label)
        if best is None or score > best[0]:
            best = (score, probe)
    assert best is not None, "l2_grid is empty"
    return best[1]


def probe_auroc(probs: Tensor, labels: Tensor, num_classes: int, multi_label: bool) -> float:
    """Macro AUROC (torchmetrics) of predicted probabilities."""
    if multi_label:
        return float(multilabel_auroc(probs, labels.long(), num_labels=num_classes))
    return float(multiclass_auroc(probs, labels.long(), num_classes=num_classes))


def _fit(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    multi_label: bool,
    l2: float,
    max_iter: int,
    mean: Tensor,
    std: Tensor,
) -> nn.Linear:
    torch.manual_seed(0)  # the same start for every L2 strength: the grid compares like with like
    head = nn.Linear(x.shape[1], num_classes)
    z = (x.float() - mean) / std  # (N, D)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = head(z)
        if multi_label:
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
        else:
            loss = F.cross_entropy(logits, y.long())
        loss = loss + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    head.requires_grad_(False)
    return head
