"""DINO through the CLI on the real datasets in ``$MEDSSL_DATA_DIR``, kept short for two CPU cores."""

import pytest

from .conftest import SHORT_RUN, assert_short_run, epoch_losses, epoch_means, learning_run, pretrain, resnet10

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SHORT = [
    *SHORT_RUN,
    "--model.init_args.backbone",
    "resnet10",
    "--model.init_args.backbone_kwargs",
    "{widen_factor: 0.125}",  # the standard stem: 3D small-input stems are slow on CPU
    "--model.init_args.hidden_dim",
    "64",
    "--model.init_args.output_dim",
    "256",
    "--model.init_args.num_local",
    "2",
]


@pytest.mark.parametrize(
    "recipe",
    [
        "dino_resnet18_pneumoniamnist_2d",
        "dino_resnet18_adrenalmnist3d_3d",
        "dino_resnet18_hippocampus_3d",
    ],
)
def test_recipe_runs_on_real_data(real_data, tmp_path, recipe):
    run = tmp_path / recipe
    assert_short_run(pretrain(recipe, run, *SHORT), run)


DINO = ["--model.init_args.hidden_dim", "128", "--model.init_args.lr", "3e-3"]
# 3D: at this width the standard stem leaves local crops of 14^3 a single voxel at layer 4; globals only.
GLOBALS_ONLY = ["--model.init_args.num_local", "0"]


def assert_student_predicts_teacher(
    rows: list[dict[str, str]], epochs: int, fall: float, margin: float
) -> None:
    """The loss fell by ``fall`` and ended ``margin`` below the constant student.

    ``train/loss_constant_student`` is the loss of the best student that ignores its input (the batch-mean
    teacher distribution); both collapses (uniform or one-hot teacher) bring the loss to it, and a student
    that cannot predict the teacher from the image stays above it.
    """
    loss, constant = epoch_losses(rows), epoch_means(rows, "train/loss_constant_student")
    assert len(loss) == epochs
    assert loss[-1] < loss[0] - fall, loss
    assert loss[-1] < constant[-1] - margin, (loss, constant)


@pytest.mark.learning
def test_dino_learns_on_pneumoniamnist(real_data, tmp_path):
    """DINO (the recipe: K = 2048, teacher 0.04, momentum 0.99) for 5 epochs on 512 real chest X-rays.

    Measured: loss 7.58 -> 6.51 against a constant student at 6.62 (log K = 7.62); the fall is all KL
    (3.32 -> 1.32), the teacher entropy rises (4.26 -> 5.19). Before (+-20 % intensity, gamma, noise,
    all-axis flips, K = 256): 5.74 -> 5.55, above the constant student (5.23) all along. With the
    teacher temperature warmed to 0.07 over 3 epochs: 7.58 -> 7.38, constant 7.47 (closer to uniform).
    """
    overrides = [
        *resnet10("{small_input: true, widen_factor: 0.25}"),
        *DINO,
        "--model.init_args.num_local",
        "2",
    ]
    rows = pretrain("dino_resnet18_pneumoniamnist_2d", tmp_path / "run", *overrides, *learning_run(512, 5))
    assert_student_predicts_teacher(rows, 5, fall=0.5, margin=0.05)


def test_dino_learns_on_adrenalmnist3d(real_data, tmp_path):
    """DINO (the recipe's 3D crops: globals 0.75-1 of the side) for 5 epochs on 512 3D shape volumes.

    Measured: loss 7.76 -> 7.19 against a constant student at 7.23 (7.14 and 7.19 with one thread). With
    the former 2D-style side fractions (globals 0.6-1) the same run ends at 7.36, above its constant
    student (7.35); with 2-4 locals at 0.3-0.6 too, every variant tried stayed within 0.03 of it.
    """
    overrides = [*resnet10("{widen_factor: 0.25}"), *DINO, *GLOBALS_ONLY, *learning_run(512, 5)]
    rows = pretrain("dino_resnet18_adrenalmnist3d_3d", tmp_path / "run", *overrides)
    assert_student_predicts_teacher(rows, 5, fall=0.3, margin=0.02)


@pytest.mark.learning
def test_dino_learns_on_hippocampus(real_data, tmp_path):
    """DINO (the recipe, batch 16) for 8 epochs on all 260 MSD Hippocampus MRI volumes.

    Measured: loss 7.81 -> 7.44 against a constant student at 7.51.
    """
    overrides = [
        *resnet10("{widen_factor: 0.25}"),
        *DINO,
        *GLOBALS_ONLY,
        *learning_run(260, 8, batch_size=16),
    ]
    rows = pretrain("dino_resnet18_hippocampus_3d", tmp_path / "run", *overrides)
    assert_student_predicts_teacher(rows, 8, fall=0.2, margin=0.03)
