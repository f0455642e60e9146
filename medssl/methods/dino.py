"""DINO: a student matches an EMA teacher's centred, sharpened output across global and local crops.

- [0]: DINO, 2021, https://arxiv.org/abs/2104.14294

The centre is a buffer of lightly's ``DINOLoss`` (saved in checkpoints) and is averaged over all ranks
under DDP: lightly's ``center_mean`` all-reduces the batch centre when ``torch.distributed`` is
initialised. Gradient clipping (DINO clips at 3.0) is Lightning's ``trainer.gradient_clip_val``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import cosine_schedule
from monai.transforms import Compose
from torch import Tensor, nn

from medssl.methods.base import METHODS, SSLMethod
from medssl.ops.distributions import teacher_entropies
from medssl.ops.precision import in_float32
from medssl.transforms.multicrop import NUM_GLOBAL, multi_crop_transform
from medssl.transforms.views import ViewAugment, check_region


@METHODS.register("dino")
class DINO(SSLMethod):
    """DINO with lightly's projection head and loss; teacher = EMA of student backbone and head.

    The teacher sees the two global crops, the student every crop; crops of one size go through the
    student in one batch. ResNets accept any crop size; a ViT (fixed ``img_size``) needs every crop,
    local ones included, at its ``img_size``. Logged with the loss: ``teacher_entropy`` + ``kl`` (= loss) and
    ``constant_student``, the loss of a student that ignores its input; only a loss below it is learning.

    Args:
        hidden_dim: width of the head's MLP.
        bottleneck_dim: size of the l2-normalised bottleneck before the last layer.
        output_dim: number of prototypes (the softmax size).
        norm_last_layer: fix the norm of the last layer's weight (more stable).
        batch_norm: batch norm in the head's MLP; helps ResNets on small data, keep it off for ViTs.
        freeze_last_layer_epochs: the last layer gets no update during these first epochs.
        momentum_start: teacher EMA momentum at the first step; cosine schedule to 1.0 at the last.
        warmup_teacher_temp: teacher temperature at epoch 0, raised linearly to ``teacher_temp``.
        teacher_temp: teacher temperature after the warm-up.
        warmup_teacher_temp_epochs: length of the teacher-temperature warm-up in epochs.
        student_temp: student temperature.
        center_momentum: EMA momentum of the teacher centre.
        global_augment: how the two global crops are made (``min_scale`` .. 1 of the image side).
        local_augment: how the local crops are made (``min_scale`` .. ``local_max_scale``).
        num_local: number of local crops per image.
        local_max_scale: largest local crop side as a fraction of the image side.
        view_region: side fraction of one random window per image that every crop is cut from (the crop
            scales are then fractions of the window): below 1, the crops of a large image overlap.
        **base: the ``SSLMethod`` options (backbone, spatial_dims, optimiser, ...).
    """

    def __init__(
        self,
        *,
        hidden_dim: int = 512,
        bottleneck_dim: int = 64,
        output_dim: int = 2048,
        norm_last_layer: bool = True,
        batch_norm: bool = False,
        freeze_last_layer_epochs: int = 1,
        momentum_start: float = 0.996,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        global_augment: ViewAugment = ViewAugment(size=32, min_scale=0.5),
        local_augment: ViewAugment = ViewAugment(size=16, min_scale=0.2),
        num_local: int = 6,
        local_max_scale: float = 0.5,
        view_region: float = 1.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.global_augment = global_augment
        self.local_augment = local_augment
        self.num_local = num_local
        self.local_max_scale = local_max_scale
        self.view_region = check_region(view_region)
        self.momentum_start = momentum_start
        _check_crop_sizes(self.backbone, {"global": global_augment.size, "local": local_augment.size})
        head_options = (self.backbone.num_features, hidden_dim, bottleneck_dim, output_dim, batch_norm)
        self.projection_head = DINOProjectionHead(
            *head_options, freeze_last_layer=freeze_last_layer_epochs, norm_last_layer=norm_last_layer
        )
        self.teacher_backbone = copy.deepcopy(self.backbone)
        # weight_norm (last layer) cannot be deep-copied: build a twin and copy the weights over
        self.teacher_head = DINOProjectionHead(*head_options, norm_last_layer=norm_last_layer)
        self.teacher_head.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )

    def view_transform(self) -> Compose:
        return multi_crop_transform(
            self.global_augment,
            self.local_augment,
            self.num_local,
            self.spatial_dims,
            self.local_max_scale,
            region=self.view_region,
        )

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_head)]

    def ema_momentum(self) -> float:
        trainer = self._trainer
        if trainer is None or not math.isfinite(trainer.estimated_stepping_batches):
            return self.momentum_start
        total = max(1, int(trainer.estimated_stepping_batches))
        return cosine_schedule(min(self.steps_taken, total), total, self.momentum_start, 1.0)

    def on_after_backward(self) -> None:
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        global_crops = torch.cat([batch[f"global_{i}"] for i in range(NUM_GLOBAL)])  # (2B, C, *global)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(global_crops)).chunk(NUM_GLOBAL)  # 2 x (B, K)
        student = list(self._student(global_crops).chunk(NUM_GLOBAL))  # 2 x (B, K)
        if self.num_local:
            local_crops = torch.cat([batch[f"local_{i}"] for i in range(self.num_local)])  # (NB, C, *local)
            student += self._student(local_crops).chunk(self.num_local)  # N x (B, K)
        return in_float32(self._loss, list(teacher), student)

    def _student(self, crops: Tensor) -> Tensor:
        return self.projection_head(self.backbone(crops))  # (n B, K)

    def _teacher_temp(self) -> float:
        """This epoch's teacher temperature on lightly's linear warm-up schedule."""
        if self.current_epoch < self.criterion.warmup_teacher_temp_epochs:
            return float(self.criterion.teacher_temp_schedule[self.current_epoch])
        return self.criterion.teacher_temp

    def _loss(self, teacher: list[Tensor], student: list[Tensor]) -> dict[str, Tensor]:
        """lightly's DINO loss and its parts (``teacher_entropies``); validation leaves the centre alone."""
        center, temperature = self.criterion.center.clone(), self._teacher_temp()
        teacher_entropy, constant_student = teacher_entropies(torch.stack(teacher), center, temperature)
        loss = self.criterion(teacher, student, teacher_temp=temperature)
        if not self.training:
            self.criterion.center.copy_(center)
        kl = loss.detach() - teacher_entropy
        return {
            "loss": loss,
            "teacher_entropy": teacher_entropy,
            "kl": kl,
            "constant_student": constant_student,
        }


def _check_crop_sizes(backbone: nn.Module, sizes: dict[str, int | Sequence[int]]) -> None:
    """A fixed-size backbone (ViT, ``img_size``) must get every crop at that size."""
    img_size = getattr(backbone, "img_size", None)
    if img_size is None:
        return
    for kind, size in sizes.items():
        per_axis = (size,) * len(img_size) if isinstance(size, int) else tuple(size)
        if per_axis != tuple(img_size):
            raise ValueError(
                f"DINO: {backbone.name} takes only inputs of img_size {tuple(img_size)}, but the {kind} "
                f"crops are {per_axis}; set {kind}_augment.size to {list(img_size)} "
                "or use a ResNet backbone (ResNets accept any crop size)"
            )
