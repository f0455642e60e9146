"""Classification fine-tuning through the CLI on the real MedMNIST files, kept short for two CPU cores."""

import json

import pytest

from medssl.cli import main
from medssl.recipes_dir import recipes_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

RECIPES = recipes_dir() / "finetune"
SHORT = [
    "--model.pretrained",
    "none",
    "--model.backbone_kwargs",
    "{small_input: true, widen_factor: 0.125}",
    "--data.batch_size",
    "32",
    "--data.num_workers",
    "0",
    "--trainer.max_steps",
    "3",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]


@pytest.mark.parametrize(
    ("recipe", "test_size"),
    [("cls_resnet18_pneumoniamnist_2d", 624), ("cls_resnet18_adrenalmnist3d_3d", 298)],
)
def test_recipe_fine_tunes_and_tests_on_the_test_split(real_data, tmp_path, recipe, test_size):
    """A few steps on a label fraction; test metrics come from the dataset's own (whole) test split."""
    run = tmp_path / recipe
    fraction = "0.1" if "pneumonia" in recipe else "0.05"
    args = ["finetune", "--config", str(RECIPES / f"{recipe}.yaml"), "--trainer.default_root_dir", str(run)]
    assert main([*args, *SHORT, "--data.label_fraction", fraction]) == 0
    metrics = json.loads((run / "test_metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/auroc"] <= 1.0 and "test/balanced_accuracy" in metrics
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["test"]) == test_size and all(case.startswith("test-") for case in splits["test"])
    assert not set(splits["train"]) & set(splits["val"])
