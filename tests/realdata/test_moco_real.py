"""MoCo through the CLI on the real datasets in ``$MEDSSL_DATA_DIR``, kept short for two CPU cores."""

import csv
import math

import pytest

from medssl.cli import main
from medssl.recipes_dir import recipes_dir

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

RECIPES = recipes_dir() / "pretrain"
SHORT = [
    "--data.limit",
    "48",
    "--data.batch_size",
    "8",
    "--data.num_workers",
    "0",
    "--trainer.max_steps",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--model.init_args.backbone_kwargs",
    "{small_input: true, widen_factor: 0.125}",
    "--model.init_args.hidden_dim",
    "64",
]


def _rows(run_dir):
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


@pytest.mark.parametrize(
    "recipe",
    [
        "moco_resnet18_pneumoniamnist_2d",
        "moco_resnet18_adrenalmnist3d_3d",
        "moco_resnet18_hippocampus_3d",
    ],
)
def test_recipe_runs_on_real_data(real_data, tmp_path, recipe):
    run = tmp_path / recipe
    args = ["pretrain", "--config", str(RECIPES / f"{recipe}.yaml"), "--trainer.default_root_dir", str(run)]
    assert main(args + SHORT) == 0
    losses = [float(r["train/loss_step"]) for r in _rows(run) if r.get("train/loss_step")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert (run / "weights" / "backbone.safetensors").is_file()


def test_moco_v3_loss_falls_on_pneumoniamnist(real_data, tmp_path):
    """MoCo v3 for 8 epochs on 512 real chest X-rays: the epoch loss must fall below chance.

    Chance for in-batch InfoNCE with B = 32 is log(32) = 3.47; measured: 3.49 -> 3.30 (min 3.27).
    v2's queue loss is no measure of progress in a run this short: with a 256-key queue it rises from
    4.18 to 5.54 (chance 5.55) as real keys replace the random initial queue, the known MoCo curve.
    """
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--config",
        str(RECIPES / "moco_resnet18_pneumoniamnist_2d.yaml"),
        "--trainer.default_root_dir",
        str(run),
        "--model.init_args.backbone",
        "resnet10",
        "--model.init_args.backbone_kwargs",
        "{small_input: true, widen_factor: 0.25}",
        "--model.init_args.version",
        "v3",
        "--model.init_args.queue_size",
        "null",
        "--model.init_args.warmup_epochs",
        "1",
        "--model.init_args.lr",
        "3e-3",
        "--data.limit",
        "512",
        "--data.batch_size",
        "32",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "8",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(args) == 0
    epoch_loss = [float(r["train/loss_epoch"]) for r in _rows(run) if r.get("train/loss_epoch")]
    assert len(epoch_loss) == 8
    assert epoch_loss[-1] < math.log(32) - 0.08, epoch_loss
    assert epoch_loss[-1] < epoch_loss[0] - 0.1, epoch_loss
