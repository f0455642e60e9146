import logging
import math

import pytest
import pytorch_lightning as pl
import torch
from lightly.utils.debug import std_of_l2_normalized
from torch.utils.data import DataLoader

from medssl.evaluation.collapse import CollapseMonitor, effective_rank
from medssl.methods import SimCLR
from medssl.transforms.views import ViewAugment


def test_effective_rank_of_known_matrices():
    assert effective_rank(torch.eye(8)).item() == pytest.approx(8.0, rel=1e-4)
    line = torch.randn(16, 1) @ torch.randn(1, 8)  # every embedding on one line
    assert effective_rank(line).item() == pytest.approx(1.0, abs=1e-3)
    two = torch.cat([torch.eye(2), torch.zeros(2, 6)], dim=1).repeat(4, 1)
    assert effective_rank(two).item() == pytest.approx(2.0, rel=1e-4)


def _views(images: int) -> dict[str, torch.Tensor]:
    return {"view_0": torch.rand(images, 1, 12, 12), "view_1": torch.rand(images, 1, 12, 12)}


def _fit_with_monitor(tmp_path, train: list[dict], val: list[dict], epochs: int = 1) -> pl.Trainer:
    torch.manual_seed(0)
    model = SimCLR(
        spatial_dims=2,
        backbone="resnet10",
        backbone_kwargs={"widen_factor": 0.125, "small_input": True},
        hidden_dim=16,
        projection_dim=8,
        augment=ViewAugment(size=12),
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[CollapseMonitor()],
    )
    trainer.fit(model, DataLoader(train, batch_size=None), DataLoader(val, batch_size=None))
    return trainer


def test_monitor_logs_std_and_rank_once_per_validation_epoch(tmp_path):
    batches = [_views(8) for _ in range(2)]
    trainer = _fit_with_monitor(tmp_path, batches, batches)
    std, rank = trainer.logged_metrics["val/embedding_std"], trainer.logged_metrics["val/effective_rank"]
    num_features = trainer.lightning_module.backbone.num_features
    assert 0 < std <= 1 / math.sqrt(num_features) * 2
    assert 1 < rank <= 16


def test_a_collapsed_backbone_shows_zero_std_and_rank_one():
    embeddings = torch.ones(8, 4) * 3.0  # every image mapped to the same vector
    assert std_of_l2_normalized(embeddings).item() == pytest.approx(0.0, abs=1e-6)
    assert effective_rank(embeddings).item() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("val_images, warnings", [(4, 1), (16, 0)])
def test_monitor_warns_once_when_too_few_validation_images_bound_the_rank(
    tmp_path, caplog, val_images, warnings
):
    with caplog.at_level(logging.WARNING, logger="medssl"):
        _fit_with_monitor(tmp_path, [_views(8)], [_views(val_images)], epochs=2)
    said = [r.getMessage() for r in caplog.records if "collapse monitor" in r.getMessage()]
    assert len(said) == warnings  # two validation epochs, one warning
    if warnings:
        assert "only 4 validation images" in said[0] and "data.val_fraction" in said[0]
