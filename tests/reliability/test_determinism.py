"""With a fixed seed and deterministic mode, two CPU runs give identical losses step for step, whatever the
number of data-loading workers (augmentations are seeded per sample, not per worker)."""

import pytest

from medssl.commands.pretrain import run

from .conftest import Losses, pretrain_args

pytestmark = pytest.mark.slow


def test_two_runs_give_identical_losses_for_20_steps(png16, tmp_path):
    first, second = Losses(), Losses()
    common = ("--trainer.max_steps", "20", "--trainer.max_epochs", "10", "--seed_everything", "7")
    run(pretrain_args("simclr", png16, tmp_path / "a", *common, "--data.num_workers", "0"), [first])
    run(pretrain_args("simclr", png16, tmp_path / "b", *common, "--data.num_workers", "2"), [second])
    assert sorted(first.values) == list(range(1, 21))
    assert first.values == second.values
    assert len(set(first.values.values())) > 10  # a real curve, not a constant
