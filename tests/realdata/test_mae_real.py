"""MAE through the CLI on the real datasets in ``$MEDSSL_DATA_DIR``, kept short for two CPU cores."""

import pytest

from .conftest import SHORT_RUN, assert_short_run, epoch_losses, epoch_means, learning_run, pretrain

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

TINY_VIT = "hidden_size: 32, num_layers: 2, num_heads: 2, mlp_dim: 64"
SHORT = [
    *SHORT_RUN,
    "--model.init_args.decoder_dim",
    "32",
    "--model.init_args.decoder_depth",
    "1",
    "--model.init_args.decoder_heads",
    "2",
]
# the recipes' own img_size / patch_size, with a tiny encoder
VIT = {
    "mae_vit_tiny_pneumoniamnist_2d": "img_size: 28, patch_size: 4",
    "mae_vit_tiny_adrenalmnist3d_3d": "img_size: 28, patch_size: 4",
    "mae_vit_tiny_hippocampus_3d": "img_size: [32, 48, 32], patch_size: [8, 8, 8]",
    "mae_vit_tiny_drive_2d": "img_size: 96, patch_size: 8",
}


@pytest.mark.parametrize("recipe", sorted(VIT))
def test_recipe_runs_on_real_data(real_data, tmp_path, recipe):
    run = tmp_path / recipe
    vit = ["--model.init_args.backbone_kwargs", f"{{{VIT[recipe]}, {TINY_VIT}}}"]
    assert_short_run(pretrain(recipe, run, *SHORT, *vit), run)


LEARN_VIT = "hidden_size: 64, num_layers: 2, num_heads: 4, mlp_dim: 128"
MAE = [
    "--model.init_args.decoder_dim",
    "64",
    "--model.init_args.decoder_depth",
    "1",
    "--model.init_args.lr",
    "2e-3",
]


def learn(
    recipe: str, run_dir, limit: int, epochs: int, batch_size: int = 32
) -> tuple[list[float], list[float]]:
    """Epoch losses and the flat-patch reference (every masked patch predicted flat at its own mean)."""
    vit = ["--model.init_args.backbone_kwargs", f"{{{VIT[recipe]}, {LEARN_VIT}}}"]
    rows = pretrain(recipe, run_dir, *vit, *MAE, *learning_run(limit, epochs, batch_size))
    loss, flat = epoch_losses(rows), epoch_means(rows, "train/loss_flat_patches")
    assert len(loss) == epochs
    return loss, flat


def test_mae_learns_on_pneumoniamnist(real_data, tmp_path):
    """5 epochs on 512 real chest X-rays (tiny ViT, 49 patches, mask 0.75).

    Flat patches (zero, with per-patch normalised targets) score 0.94. Measured: 0.97 -> 0.77.
    """
    loss, flat = learn("mae_vit_tiny_pneumoniamnist_2d", tmp_path / "run", 512, 5)
    assert loss[-1] < flat[-1] - 0.1, (loss, flat)
    assert loss[-1] < loss[0] - 0.15, loss
    assert len(list((tmp_path / "run" / "reconstructions").glob("epoch_*.png"))) == 5


def test_mae_learns_on_hippocampus(real_data, tmp_path):
    """8 epochs on all 260 MSD Hippocampus MRI volumes (96 patches of 8^3, mask 0.75), batch 16.

    Flat patches score 1.00. Measured: 1.14 -> 0.95 (val 1.01 -> 0.94).
    """
    loss, flat = learn("mae_vit_tiny_hippocampus_3d", tmp_path / "run", 260, 8, batch_size=16)
    assert loss[-1] < flat[-1] - 0.02, (loss, flat)
    assert loss[-1] < loss[0] - 0.1, loss


@pytest.mark.learning
def test_mae_reaches_flat_patches_on_adrenalmnist3d(real_data, tmp_path):
    """5 epochs on 512 AdrenalMNIST3D volumes (343 patches of 4^3, mask 0.75): only the trivial solution.

    The volumes are binary shapes with 1.5 % foreground: 92 % of the patches are empty, so flat patches
    already score 0.13 (a masked patch on the boundary scores about 1). Measured: 0.207 -> 0.129, the flat
    reference (0.129) and no lower; the same with mask 0.5, patch 7, lr 5e-3, no per-patch normalisation
    or a twice wider and deeper encoder. A 230-step run reaches 0.126 against 0.130 (the longer run is in
    benchmarks/method_learning.md). This checks that the loss falls to the reference, not that it learns.
    """
    loss, flat = learn("mae_vit_tiny_adrenalmnist3d_3d", tmp_path / "run", 512, 5)
    assert loss[-1] < loss[0] - 0.05, loss
    assert loss[-1] < flat[-1] + 0.003, (loss, flat)
