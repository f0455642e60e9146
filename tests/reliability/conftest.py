import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl

from ..commands.conftest import smoke_args, write_png_folder


class Losses(pl.Callback):
    """The training loss of every optimiser step, by global step."""

    def __init__(self) -> None:
        self.values: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if outputs is not None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.values[trainer.global_step] = float(loss)


class SignalAt(pl.Callback):
    """Send ``signum`` to this process while the batch of optimiser step ``step`` runs, as a scheduler would:
    the run should stop right after that step."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)


def pretrain_args(method: str, source: Path, run: Path, *extra: str) -> list[str]:
    """``medssl pretrain`` arguments (without the command) for a smoke recipe, deterministic."""
    args = smoke_args(2, source, run, "--trainer.deterministic", "true", *extra)[1:]
    args[1] = args[1].replace("simclr_2d", f"{method}_2d")
    return args


@pytest.fixture
def png16(tmp_path):
    return write_png_folder(tmp_path / "png", count=16)
