"""What DDP needs beyond Lightning and lightly: a different random stream on every rank.

Lightning seeds every rank with the same ``seed_everything`` value, and MONAI's ``DataLoader`` derives the
random state of its transforms (in the main process and in each worker) from that process's torch
generator. Left alone, every rank would draw the same crops, flips, noise and MAE masks for its different
images, so the global batch would hold ``world_size`` times fewer distinct augmentations than it should.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_rank(rank: int) -> int:
    """Re-seed torch, numpy and ``random`` of this process with ``torch.initial_seed() + rank``; returns it.

    Call it once per process after Lightning's own seeding and before the dataloaders are built (the
    LightningModule's ``setup`` hook): rank 0 keeps the run's seed, so a one-process run is unchanged.
    The distributed sampler's shuffle is untouched (it has its own seed, shared by all ranks).
    """
    seed = (torch.initial_seed() + rank) % 2**63
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return seed
