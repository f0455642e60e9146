"""Online kNN probe: how well do the backbone's features separate labelled images, while pretraining runs?

Pretraining reads no labels. This callback reads a separate labelled source (e.g. the MedMNIST ``.npz``
with its labels) through ``ClassificationDataModule``: up to ``limit`` training images form the kNN bank,
up to ``limit`` validation images are classified, and ``val/knn_auroc`` and ``val/knn_accuracy`` are logged
every ``every_n_epochs`` validation epochs. The test split is never read.

``medssl pretrain`` always adds it under the recipe key ``probe``; it is off until ``probe.source`` is set,
and it takes the pretraining's ``data.intensity``, ``data.spatial_size`` and ``data.spacing`` (linked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from medssl.evaluation.features import extract_features
from medssl.evaluation.knn import knn_scores
from medssl.finetune.classification import classification_metrics

if TYPE_CHECKING:
    from medssl.finetune.cls_data import ClassificationDataModule
    from medssl.methods.base import SSLMethod


class KNNProbe(pl.Callback):
    """kNN classification of a labelled source with the current backbone, during pretraining.

    Args:
        source: a labelled datalist (``label`` column) or MedMNIST ``.npz``; ``None`` switches the probe off.
        num_classes: classes of ``label``.
        intensity: the pretraining's intensity preset (the images must look the same).
        spatial_size: centre pad/crop, as in the pretraining.
        spacing: 3D resampling (mm), as in the pretraining.
        limit: at most this many images of each split (seeded).
        k: neighbours; temperature: similarity temperature.
        every_n_epochs: probe every this many validation epochs.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        *,
        source: str | None = None,
        num_classes: int = 2,
        intensity: str = "minmax",
        spatial_size: Sequence[int] | None = None,
        spacing: Sequence[float] | None = None,
        limit: int = 1000,
        k: int = 20,
        temperature: float = 0.1,
        every_n_epochs: int = 1,
        batch_size: int = 128,
    ) -> None:
        self.source, self.num_classes = source, num_classes
        self.options: dict[str, Any] = {
            "intensity": intensity,
            "spatial_size": spatial_size,
            "spacing": spacing,
            "limit": limit,
            "batch_size": batch_size,
        }
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs
        self._data: ClassificationDataModule | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from medssl.finetune.cls_data import ClassificationDataModule

        method = cast("SSLMethod", pl_module)
        if self._data is None and self.source is not None:
            self._data = ClassificationDataModule(
                **self.options,
                source=self.source,
                num_classes=self.num_classes,
                spatial_dims=method.spatial_dims,
                in_channels=method.in_channels,
                flip_prob=0.0,
                intensity_jitter=0.0,
                num_workers=0,
                cache="memory",
            )
            self._data.setup("fit")  # checks the whole source now, not after the first epoch

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._data is None or trainer.current_epoch % self.every_n_epochs:
            return
        backbone, device = cast("SSLMethod", pl_module).backbone, pl_module.device
        bank, bank_labels = extract_features(backbone, self._data.eval_loader("train"), device)
        query, labels = extract_features(backbone, self._data.eval_loader("val"), device)
        scores = knn_scores(
            query, bank, bank_labels, self.num_classes, k=self.k, temperature=self.temperature
        )
        metrics = classification_metrics(self.num_classes, multi_label=False)(scores, labels.long())
        pl_module.log("val/knn_auroc", metrics["auroc"], rank_zero_only=True)
        pl_module.log("val/knn_accuracy", metrics["accuracy"], rank_zero_only=True)
