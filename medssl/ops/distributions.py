"""Entropies of softmax outputs: what the DINO loss is made of, logged to tell learning from collapse.

- [0]: DINO, 2021, https://arxiv.org/abs/2104.14294 (section 5.3: entropy and KL of the teacher)
"""

from __future__ import annotations

import torch
from torch import Tensor


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last axis of probabilities ``(..., K)``; shape ``(...)``."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)


@torch.no_grad()
def teacher_entropies(teacher: Tensor, center: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Mean entropy of the teacher's distributions and entropy of their mean, from logits ``(V, B, K)``.

    The DINO cross-entropy is the first plus KL(teacher || student) ([0]). The second is the loss of the
    best student that ignores its input (one distribution for every image: the mean teacher one). Both
    collapses bring the loss to it: a uniform teacher makes both ``log K``, a one-hot one both 0.
    """
    probs = torch.softmax((teacher - center) / temperature, dim=-1)  # (V, B, K)
    return entropy(probs).mean(), entropy(probs.flatten(0, -2).mean(dim=0))
