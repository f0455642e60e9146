"""MoCo: a query encoder against an EMA key encoder; negatives from a queue (v2) or the batch (v3).

- [0]: MoCo v2, 2020, https://arxiv.org/abs/2003.04297
- [1]: MoCo v3, 2021, https://arxiv.org/abs/2104.02057
- [2]: MoCHi, 2020, https://arxiv.org/abs/2010.01028
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad
from lightly.utils import dist
from lightly.utils.scheduler import cosine_schedule
from monai.transforms import Compose
from torch import Tensor, nn

from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.mochi import in_batch_infonce, mochi_negatives, moco_logits
from medssl.ops.precision import in_float32
from medssl.transforms.views import ViewAugment, check_region, multi_view_transform


@METHODS.register("moco")
class MoCo(SSLMethod):
    """MoCo v2 (queue of past keys, optional MoCHi) or v3 (in-batch keys, prediction head).

    Both are symmetric: each view's query is matched to the other view's key, and the loss is the mean
    over both directions. v2 uses lightly's ``NTXentLoss`` whose memory bank is the queue (``2B`` keys
    enter it per step after the loss, gathered over all ranks); the queue is saved in checkpoints. v3
    uses a 3-layer BN projection, a prediction head on the query side and the other keys of the batch
    (over all ranks) as negatives; its loss is not scaled by ``2 * temperature``. v2 also logs ``in_batch``,
    the v3 loss of its queries and keys (chance ``log B``): the queue loss first rises as real keys replace
    the random initial queue, so ``in_batch`` is the one that shows progress in a short run.

    Args:
        version: ``"v2"`` or ``"v3"``.
        queue_size: v2's number of queued negative keys (None: 4096); v3 has no queue and rejects it.
        temperature: InfoNCE temperature.
        hidden_dim: width of the projection (and v3 prediction) MLP.
        projection_dim: size of the embedding the loss compares.
        momentum_start: key encoder EMA momentum at the first step, raised to ``momentum_end`` by a cosine.
        momentum_end: key encoder EMA momentum at the last step.
        mochi: add MoCHi synthetic hard negatives to every query's logits (v2 only).
        mochi_top_k: how many of the hardest queue negatives are mixed.
        mochi_mix: synthetic negatives per query mixed from two hard negatives.
        mochi_query_mix: synthetic negatives per query mixed from the query and one hard negative.
        augment: how each of the two views is made.
        view_region: side fraction of one random window per image that both views are cut from (their
            crop scales are then fractions of the window): below 1, small crops of a large image overlap.
        **base: the ``SSLMethod`` options (backbone, spatial_dims, optimiser, ...).
    """

    def __init__(
        self,
        *,
        version: Literal["v2", "v3"] = "v2",
        queue_size: int | None = None,
        temperature: float = 0.2,
        hidden_dim: int = 512,
        projection_dim: int = 128,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        mochi: bool = False,
        mochi_top_k: int = 1024,
        mochi_mix: int = 1024,
        mochi_query_mix: int = 128,
        augment: ViewAugment = ViewAugment(),
        view_region: float = 1.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.mochi_sizes = (mochi_top_k, mochi_mix, mochi_query_mix)
        queue = _check_options(version, queue_size, mochi, self.mochi_sizes)
        self.temperature, self.mochi, self.augment = temperature, mochi, augment
        self.view_region = check_region(view_region)
        self.momentum = (momentum_start, momentum_end)
        v3 = version == "v3"
        self.projection_head = MoCoProjectionHead(
            self.backbone.num_features, hidden_dim, projection_dim, num_layers=3 if v3 else 2, batch_norm=v3
        )
        self.prediction_head = BYOLPredictionHead(projection_dim, hidden_dim, projection_dim) if v3 else None
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projection_head = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.key_backbone)
        deactivate_requires_grad(self.key_projection_head)
        self.criterion: NTXentLoss | None = None  # v2 only: its memory bank is the queue
        if queue:
            self.criterion = NTXentLoss(
                temperature, memory_bank_size=(queue, projection_dim), gather_distributed=True
            )
            _persist_buffers(self.criterion.memory_bank, "bank", "bank_ptr")  # lightly: non-persistent

    def view_transform(self) -> Compose:
        return multi_view_transform([self.augment, self.augment], self.spatial_dims, region=self.view_region)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projection_head, self.key_projection_head)]

    def ema_momentum(self) -> float:
        start, end = self.momentum
        total = self._trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        if not math.isfinite(total):
            return start
        step = max(self.steps_taken - 1, 0)  # the optimiser step just taken, counted from 0
        return cosine_schedule(step, max(1, int(total)), start, end)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        views = torch.cat([batch["view_0"], batch["view_1"]])  # (2B, C, *spatial): one forward pass
        q = self.projection_head(self.backbone(views))  # (2B, D)
        if self.prediction_head is not None:
            q = self.prediction_head(q)
        k = self._keys(views).roll(len(views) // 2, dims=0)  # (2B, D): the other view's key
        if self.criterion is None:
            return {"loss": in_float32(in_batch_infonce, q, k, self.temperature)}
        if self.mochi:
            loss = in_float32(self._mochi_loss, q, k, self.criterion)
        else:
            loss = in_float32(self.criterion, q, k)
        return {"loss": loss, "in_batch": in_float32(in_batch_infonce, q.detach(), k, self.temperature)}

    @torch.no_grad()
    def _keys(self, views: Tensor) -> Tensor:
        """Key embeddings ``(2B, D)``; the batch is shuffled across ranks for BN (shuffling BN, [0])."""
        distributed = dist.world_size() > 1
        shuffled, order = batch_shuffle(views, distributed=distributed)
        keys = self.key_projection_head(self.key_backbone(shuffled))
        return batch_unshuffle(keys, order, distributed=distributed)

    def _mochi_loss(self, q: Tensor, k: Tensor, criterion: NTXentLoss) -> Tensor:
        """InfoNCE of [0] with MoCHi negatives ([2]) appended; the keys enter the queue afterwards."""
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        _, queue = criterion.memory_bank(k, update=q.requires_grad)  # (D, K), read before k goes in
        queue = queue.T.to(q)  # (K, D)
        top_k, num_mix, num_query_mix = self.mochi_sizes
        hard = mochi_negatives(
            q, queue, top_k=top_k, num_mix=num_mix, num_query_mix=num_query_mix
        )  # (2B, mix + query_mix, D)
        logits = moco_logits(q, k, queue, self.temperature, hard)  # (2B, 1 + K + mix + query_mix)
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def _check_options(version: str, queue_size: int | None, mochi: bool, mochi_sizes: tuple[int, ...]) -> int:
    """Validate the options; return the queue length (0 for v3)."""
    if version == "v3":
        if queue_size:
            raise ValueError(f"MoCo v3 uses in-batch negatives and has no queue; got queue_size={queue_size}")
        if mochi:
            raise ValueError("mochi mixes negatives from the queue: it needs version='v2'")
        return 0
    queue = 4096 if queue_size is None else queue_size
    if queue <= 0:
        raise ValueError(
            f"MoCo v2 needs queue_size > 0 (got {queue}); use version='v3' for in-batch negatives"
        )
    if mochi and (mochi_sizes[0] <= 0 or min(mochi_sizes) < 0):
        raise ValueError(
            f"mochi needs mochi_top_k > 0 and mochi_mix, mochi_query_mix >= 0; got {mochi_sizes}"
        )
    return queue


def _persist_buffers(module: nn.Module, *names: str) -> None:
    """Re-register ``names`` as persistent buffers so they are in ``state_dict`` (checkpoint, resume)."""
    for name in names:
        tensor = getattr(module, name)
        delattr(module, name)
        module.register_buffer(name, tensor, persistent=True)
