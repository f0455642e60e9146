"""Frozen-feature evaluation of a backbone: kNN and a linear probe on its pooled features.

Features of the train, val and test splits are computed once, without augmentation. The kNN uses the
training features as its bank; the linear probe is fitted on the training features with its L2 strength
picked on val. Metrics are the fine-tuning ones (torchmetrics): ``knn/test/auroc``, ``linear/val/f1``, ...
The test split is used for the reported figures only.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from medssl.evaluation.features import extract_features
from medssl.evaluation.knn import knn_scores
from medssl.evaluation.linear_probe import fit_linear_probe
from medssl.finetune.classification import classification_metrics

SPLITS = ("train", "val", "test")


def split_features(backbone: nn.Module, datamodule: Any) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (features, labels)}`` for a ``ClassificationDataModule`` (set up here if needed)."""
    for stage in ("fit", "test"):
        datamodule.setup(stage)
    return {name: extract_features(backbone, datamodule.eval_loader(name)) for name in SPLITS}


def frozen_metrics(
    features: dict[str, tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    multi_label: bool = False,
    knn_k: int = 20,
    knn_temperature: float = 0.1,
) -> dict[str, float]:
    """kNN and linear-probe metrics on val and test, plus the probe's chosen L2 strength."""
    bank, bank_labels = features["train"]
    probe = fit_linear_probe(features["train"], features["val"], num_classes, multi_label=multi_label)
    results: dict[str, float] = {"linear/l2": probe.l2, "knn/k": float(min(knn_k, len(bank)))}
    for split in ("val", "test"):
        x, y = features[split]
        predictions = {
            "knn": knn_scores(x, bank, bank_labels, num_classes, k=knn_k, temperature=knn_temperature),
            "linear": probe(x),
        }
        for name, probs in predictions.items():
            metrics = classification_metrics(num_classes, multi_label)
            for key, value in metrics(probs, y.long()).items():
                if value.ndim:  # per class
                    results.update({f"{name}/{split}/{key}{c}": float(v) for c, v in enumerate(value)})
                else:
                    results[f"{name}/{split}/{key}"] = float(value)
    return dict(sorted(results.items()))
