"""``medssl finetune`` for segmentation on the real MSD Hippocampus and DRIVE data, a few CPU steps each.

Each run takes the recipe as shipped with a tiny backbone; Dice is near chance after 3 steps: the point is
that the whole path runs and that test metrics come from held-out cases only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medssl.cli import main
from medssl.recipes_dir import recipes_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _finetune(recipe: str, tmp_path: Path, *extra: str) -> dict:
    run = tmp_path / "run"
    args = [
        "finetune",
        "--config",
        str(recipes_dir() / "finetune" / f"{recipe}.yaml"),
        "--model.pretrained",
        "none",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.num_workers",
        "0",
        *extra,
    ]
    assert main(args) == 0
    return {
        "metrics": json.loads((run / "test_metrics.json").read_text())["metrics"],
        "splits": json.loads((run / "splits.json").read_text()),
    }


def test_hippocampus_reports_test_dice_on_held_out_patients(real_data: Path, tmp_path: Path) -> None:
    out = _finetune(
        "seg_unet_hippocampus_3d",
        tmp_path,
        "--data.limit",
        "8",
        "--model.backbone_kwargs",
        "{features: [4, 4, 8, 8, 16, 4]}",
    )
    assert {"test/dice", "test/dice_anterior", "test/dice_posterior", "test/hd95"} <= set(out["metrics"])
    assert 0.0 <= out["metrics"]["test/dice"] <= 1.0
    splits = out["splits"]
    assert len(splits["test"]) == 2 and not set(splits["test"]) & set(splits["train"] + splits["val"])


def test_drive_tests_on_the_official_test_images(real_data: Path, tmp_path: Path) -> None:
    out = _finetune(
        "seg_resnet18_drive_2d",
        tmp_path,
        "--data.limit",
        "2",
        "--model.feature_size",
        "4",
        "--model.backbone",
        "resnet10",
        "--model.backbone_kwargs",
        "{small_input: true, widen_factor: 0.125}",
    )
    assert {"test/dice", "test/dice_vessel", "test/hd95"} <= set(out["metrics"])
    assert out["splits"]["test"] == ["01_test", "02_test"]
    assert all(case.endswith("_training") for case in out["splits"]["train"] + out["splits"]["val"])


@pytest.mark.parametrize("recipe", ["seg_vit_tiny_hippocampus_3d", "seg_vit_tiny_drive_2d"])
def test_vit_recipes_segment_with_a_unetr_decoder(real_data: Path, tmp_path: Path, recipe: str) -> None:
    shipped = yaml.safe_load((recipes_dir() / "finetune" / f"{recipe}.yaml").read_text())["model"]
    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}  # the recipe's own grid
    out = _finetune(
        recipe,
        tmp_path,
        "--data.limit",
        "2" if recipe.endswith("_2d") else "8",
        "--model.feature_size",
        "4",
        "--model.backbone_kwargs",
        json.dumps(shipped["backbone_kwargs"] | tiny),
    )
    assert 0.0 <= out["metrics"]["test/dice"] <= 1.0
    assert out["splits"]["test"] and not set(out["splits"]["test"]) & set(out["splits"]["train"])
