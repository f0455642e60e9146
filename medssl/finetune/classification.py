"""Classification fine-tuning: a pretrained backbone + a linear head, as a linear probe or a full fine-tune.

- [0]: layer-wise LR decay (BEiT), 2021, https://arxiv.org/abs/2106.08254
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassRecall,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelRecall,
)

from medssl.backbones import build_backbone
from medssl.backbones.vit import ViTBackbone
from medssl.finetune.pretrained import load_backbone_weights, pretrained_parameter_names, summary
from medssl.optim import skips_decay, warmup_cosine
from medssl.reliability.divergence import LossGuard, NanPolicy

log = logging.getLogger("medssl.finetune")
Mode = Literal["linear_probe", "finetune"]


class ClassificationModule(pl.LightningModule):
    """A backbone and a linear head over its pooled features, for multi-class or multi-label labels.

    ``linear_probe`` freezes the backbone (kept in eval mode, so norm statistics do not move) and trains the
    head only. ``finetune`` trains everything, the pretrained backbone tensors at ``lr * backbone_lr_scale``
    and, for ViTs, each block at a further ``layer_decay ** depth-from-the-top`` of that; a backbone trained
    from scratch learns at ``lr`` (there is nothing to preserve, and scratch baselines are not handicapped).
    Metrics (torchmetrics, logged as ``val/auroc``, ``test/balanced_accuracy``, ``test/auroc_class0``, ...):
    macro AUROC, accuracy, balanced accuracy (macro recall), macro F1 and the AUROC of each class.

    Args:
        backbone: registered backbone name; with ``backbone_kwargs`` it must match the pretraining's.
        backbone_kwargs: the backbone builder's own options, e.g. ``{"small_input": true}``.
        spatial_dims: 2 or 3; linked from ``data.spatial_dims``.
        in_channels: image channels; linked from ``data.in_channels``.
        num_classes: outputs of the head; linked from ``data.num_classes``.
        multi_label: independent sigmoid outputs and BCE instead of softmax and cross-entropy; linked.
        pretrained: a pretraining run folder, checkpoint or export folder; ``none`` trains from scratch.
        mode: ``linear_probe`` or ``finetune``.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
        lr: peak learning rate of the head, reached after the warm-up; cosine decay afterwards.
        backbone_lr_scale: the pretrained backbone's learning rate as a share of ``lr`` (``finetune`` only;
            tensors left at their fresh init, e.g. from scratch, train at ``lr``).
        layer_decay: ViT only: learning-rate factor per block counted from the top (1.0 = none).
        weight_decay: decoupled weight decay; biases, norms and embeddings get none.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        min_lr_ratio: final learning rate as a fraction of the peak.
        class_weights: loss weight of each class, or ``balanced`` (inverse training frequency); multi-label:
            BCE ``pos_weight`` (``balanced``: negatives / positives of each class).
        nan_policy: on a NaN / Inf loss, ``stop`` (the last good checkpoint is kept) or ``skip`` the batch.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        multi_label: bool = False,
        pretrained: str | None = None,
        mode: Mode = "finetune",
        optimizer: Literal["adamw", "sgd"] = "adamw",
        lr: float = 1e-3,
        backbone_lr_scale: float = 0.1,
        layer_decay: float = 1.0,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.01,
        class_weights: list[float] | Literal["balanced"] | None = None,
        nan_policy: NanPolicy = "stop",
    ) -> None:
        super().__init__()
        if mode not in ("linear_probe", "finetune"):
            raise ValueError(f"mode must be 'linear_probe' or 'finetune', got {mode!r}")
        if isinstance(class_weights, list) and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for num_classes={num_classes}")
        self.save_hyperparameters()
        self.backbone = build_backbone(
            backbone, spatial_dims=spatial_dims, in_channels=in_channels, **(backbone_kwargs or {})
        )
        if layer_decay != 1.0 and not isinstance(self.backbone, ViTBackbone):
            raise ValueError(f"layer_decay applies to ViT backbones only; {backbone!r} is not one (use 1.0)")
        self.load_report = load_backbone_weights(self.backbone, pretrained)
        self._pretrained = pretrained_parameter_names(self.load_report)
        log.info(summary(self.load_report))
        if mode == "linear_probe":
            self.backbone.requires_grad_(False)
        self.head = nn.Linear(self.backbone.num_features, num_classes)
        self.class_weight: Tensor | None = (
            torch.tensor(class_weights, dtype=torch.float) if isinstance(class_weights, list) else None
        )
        self.loss_guard = LossGuard(nan_policy)
        self.eval_metrics = nn.ModuleDict(
            {s: classification_metrics(num_classes, multi_label) for s in ("val", "test")}
        )

    # --- model -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        with torch.set_grad_enabled(self.hparams["mode"] == "finetune" and torch.is_grad_enabled()):
            features = self.backbone(x)  # (B, num_features)
        return self.head(features)  # (B, num_classes)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy (multi-class) or BCE with logits (multi-label), with the class weights."""
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        if self.hparams["multi_label"]:
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight)
        return F.cross_entropy(logits, target.long(), weight=weight)

    # --- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams["class_weights"] == "balanced" and self.class_weight is None:
            counts = self.trainer.datamodule.class_counts()  # type: ignore[attr-defined]
            self.class_weight = balanced_weights(counts, self._train_size(), self.hparams["multi_label"])
            log.info("balanced class weights: %s", [round(w, 3) for w in self.class_weight.tolist()])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.hparams["mode"] == "linear_probe":
            self.backbone.eval()  # frozen: batch-norm statistics stay those of the pretraining

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss = self.loss(self(batch["image"]), batch["label"])
        if self.loss_guard.check(self, {"loss": loss}) is None:
            return None  # non-finite, skipped (nan_policy skip)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["image"])
        )
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = self.param_groups()
        optimizer: torch.optim.Optimizer
        if hp["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=hp["lr"])
        else:
            optimizer = torch.optim.SGD(groups, lr=hp["lr"], momentum=0.9)
        schedule = warmup_cosine(
            optimizer, self.trainer, warmup_epochs=hp["warmup_epochs"], min_lr_ratio=hp["min_lr_ratio"]
        )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def param_groups(self) -> list[dict[str, Any]]:
        """Head at ``lr``; backbone at ``lr * backbone_lr_scale`` (ViT: times the layer decay); no decay on
        biases, norms and embeddings. Frozen parameters are left out."""
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                plain = skips_decay(name, param)
                groups.setdefault((self._lr_scale(name), plain), []).append(param)
        return [
            {
                "params": params,
                "lr": self.hparams["lr"] * scale,
                "weight_decay": 0.0 if plain else self.hparams["weight_decay"],
            }
            for (scale, plain), params in groups.items()
        ]

    # --- helpers -----------------------------------------------------------------------------
    def _lr_scale(self, name: str) -> float:
        if name not in self._pretrained:
            return 1.0  # the head, and backbone tensors at their fresh init
        scale: float = self.hparams["backbone_lr_scale"]
        if isinstance(self.backbone, ViTBackbone):
            depth = len(self.backbone.blocks)  # patch embedding 0, blocks 1..depth, final norm depth + 1
            parts = name.split(".")
            layer = (
                0
                if parts[1] == "patch_embedding"
                else int(parts[2]) + 1
                if parts[1] == "blocks"
                else depth + 1
            )
            scale *= self.hparams["layer_decay"] ** (depth + 1 - layer)
        return scale

    def _train_size(self) -> int:
        return len(self.trainer.datamodule.items()["train"])  # type: ignore[attr-defined]

    def _eval_step(self, stage: str, batch: dict[str, Tensor]) -> None:
        logits = self(batch["image"])  # (B, num_classes)
        target = batch["label"]
        self.log(f"{stage}/loss", self.loss(logits, target), batch_size=len(logits))
        multi = self.hparams["multi_label"]
        probs = logits.sigmoid() if multi else logits.softmax(dim=1)
        self._metrics(stage).update(probs, target.long())

    def _metrics(self, stage: str) -> MetricCollection:
        metrics = self.eval_metrics[stage]
        assert isinstance(metrics, MetricCollection)
        return metrics

    def _log_metrics(self, stage: str) -> None:
        metrics = self._metrics(stage)
        for name, value in metrics.compute().items():
            if value.ndim:  # per class
                for c, v in enumerate(value):
                    self.log(f"{stage}/{name}{c}", v)
            else:
                self.log(f"{stage}/{name}", value, prog_bar=name == "auroc")
        metrics.reset()


def balanced_weights(counts: list[int], total: int, multi_label: bool) -> Tensor:
    """Inverse-frequency class weights: ``total / (K * n_c)``; multi-label: ``(total - n_c) / n_c``."""
    n = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    if multi_label:
        return (total - n).clamp(min=0) / n
    return total / (len(counts) * n)


def classification_metrics(num_classes: int, multi_label: bool) -> MetricCollection:
    """Macro AUROC, accuracy, balanced accuracy (macro recall), macro F1 and per-class AUROC."""
    n = num_classes
    if multi_label:
        return MetricCollection(
            {
                "auroc": MultilabelAUROC(n),
                "accuracy": MultilabelAccuracy(n, average="micro"),
                "balanced_accuracy": MultilabelRecall(n, average="macro"),
                "f1": MultilabelF1Score(n, average="macro"),
                "auroc_class": MultilabelAUROC(n, average="none"),
            }
        )
    return MetricCollection(
        {
            "auroc": MulticlassAUROC(n),
            "accuracy": MulticlassAccuracy(n, average="micro"),
            "balanced_accuracy": MulticlassRecall(n, average="macro"),
            "f1": MulticlassF1Score(n, average="macro"),
            "auroc_class": MulticlassAUROC(n, average="none"),
        }
    )
