"""MoCo through the CLI on the real datasets in ``$MEDSSL_DATA_DIR``, kept short for two CPU cores."""

import math

import pytest

from .conftest import SHORT_RUN, assert_short_run, epoch_losses, pretrain

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SHORT = [
    *SHORT_RUN,
    "--model.init_args.backbone_kwargs",
    "{small_input: true, widen_factor: 0.125}",
    "--model.init_args.hidden_dim",
    "64",
]


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
    assert_short_run(pretrain(recipe, run, *SHORT), run)


def test_moco_v3_loss_falls_on_pneumoniamnist(real_data, tmp_path):
    """MoCo v3 for 8 epochs on 512 real chest X-rays: the epoch loss must fall below chance.

    Chance for in-batch InfoNCE with B = 32 is log(32) = 3.47; measured: 3.49 -> 3.30 (min 3.27).
    v2's queue loss is no measure of progress in a run this short: with a 256-key queue it rises from
    4.18 to 5.54 (chance 5.55) as real keys replace the random initial queue, the known MoCo curve.
    """
    run = tmp_path / "run"
    args = [
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
    epoch_loss = epoch_losses(pretrain("moco_resnet18_pneumoniamnist_2d", run, *args))
    assert len(epoch_loss) == 8
    assert epoch_loss[-1] < math.log(32) - 0.08, epoch_loss
    assert epoch_loss[-1] < epoch_loss[0] - 0.1, epoch_loss
