"""Segmentation fine-tuning on the real MSD Hippocampus and DRIVE data, a few steps on two CPU cores.

Through the Python API (``SegmentationModule`` + ``SegmentationDataModule``): ``medssl finetune`` builds the
classification pair only so far. Each test takes the recipe's data settings with a tiny backbone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from medssl.finetune.seg_data import SegmentationDataModule
from medssl.finetune.segmentation import SegmentationModule
from medssl.recipes_dir import recipes_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

TINY_RESNET = {"small_input": True, "widen_factor": 0.125}


@pytest.fixture(autouse=True, scope="module")
def _two_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _recipe(name: str) -> dict:
    return yaml.safe_load((recipes_dir() / "finetune" / f"{name}.yaml").read_text())


def _fit_and_test(
    recipe: dict, real_data: Path, tmp_path: Path, **data_overrides: object
) -> Mapping[str, float]:
    data = {**recipe["data"], **data_overrides, "num_workers": 0, "batch_size": 2}
    data["source"] = data["source"].replace("${MEDSSL_DATA_DIR}", str(real_data))
    datamodule = SegmentationDataModule(**data)
    model = SegmentationModule(
        backbone="resnet10",
        backbone_kwargs=TINY_RESNET,
        spatial_dims=data["spatial_dims"],
        in_channels=data.get("in_channels", 1),
        num_classes=data["num_classes"],
        class_names=recipe["model"]["class_names"],
        feature_size=4,
        pretrained="none",
        sw_batch_size=16,
    )
    trainer = pl.Trainer(
        max_steps=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer.test(model, datamodule=datamodule, verbose=False)[0]


def test_hippocampus_few_steps_report_test_dice_on_the_held_out_patients(
    real_data: Path, tmp_path: Path
) -> None:
    """3 steps on 8 cases (2 held out for test): Dice near chance, the point is the whole path runs."""
    metrics = _fit_and_test(_recipe("seg_resnet18_hippocampus_3d"), real_data, tmp_path, limit=8)
    assert {"test/dice", "test/dice_anterior", "test/dice_posterior", "test/hd95"} <= set(metrics)
    assert 0.0 <= metrics["test/dice"] <= 1.0
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert len(splits["test"]) == 2 and not set(splits["test"]) & set(splits["train"] + splits["val"])


def test_drive_few_steps_test_on_the_official_test_images_inside_the_fov(
    real_data: Path, tmp_path: Path
) -> None:
    """Whole 565x584 test images by 96x96 sliding window; cases from DRIVE/test only."""
    metrics = _fit_and_test(_recipe("seg_resnet18_drive_2d"), real_data, tmp_path, limit=2)
    assert {"test/dice", "test/dice_vessel", "test/hd95"} <= set(metrics)
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits["test"] == ["01_test", "02_test"]
    assert all(case.endswith("_training") for case in splits["train"] + splits["val"])
