"""Atomic checkpoint writes, the resume checks, and RunCheckpoint's last.ckpt cadence."""

import errno
import os
import shutil

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _atomic_save
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medssl.commands.run_cli import RunDirError, resume_path
from medssl.reliability import checkpoints
from medssl.reliability.checkpoints import AtomicCheckpointIO, CheckpointError, RunCheckpoint, check_resumable


class _Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def _half_then_die(real_save):
    def save(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise _Killed

    return save


def test_a_write_interrupted_halfway_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    monkeypatch.setattr(checkpoints.torch, "save", _half_then_die(torch.save))
    with pytest.raises(_Killed):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1
    assert os.listdir(path.parent) == ["last.ckpt"]  # the partial temp file was removed


def test_a_temp_file_left_by_sigkill_is_cleaned_on_the_next_save(tmp_path):
    path = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt{checkpoints.TMP_MARK}12345"
    stale.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert not stale.exists() and torch.load(path, weights_only=True)["global_step"] == 3


def test_lightning_atomic_save_is_not_atomic_across_file_systems(tmp_path, monkeypatch):
    """Why AtomicCheckpointIO exists: Lightning writes the temp file in the system temp folder; when the run
    folder is on another file system, rename fails (EXDEV) and shutil.move copies into the target, so a kill
    during the copy leaves a truncated checkpoint. (If this starts failing, Lightning became atomic.)"""
    path = tmp_path / "last.ckpt"
    _atomic_save({"global_step": 1, "w": torch.ones(1000)}, path)

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def copy_half_then_die(src, dst, *args, **kwargs):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read()[:100])
        raise _Killed

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(shutil, "copyfile", copy_half_then_die)
    with pytest.raises(_Killed):
        _atomic_save({"global_step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        torch.load(path, weights_only=True)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _training_ckpt(path, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {}, "global_step": 4, **extra}, path)
    return path


def test_check_resumable_refuses_code_truncation_and_non_training_files(tmp_path):
    good = _training_ckpt(tmp_path / "c" / "last.ckpt")
    check_resumable(good)
    marker = tmp_path / "pwned"
    evil = _training_ckpt(tmp_path / "e" / "last.ckpt", hyper_parameters={"x": _RunsCode(str(marker))})
    with pytest.raises(CheckpointError, match="refused to load: it holds pickled objects"):
        check_resumable(evil)
    assert not marker.exists()
    other = _training_ckpt(tmp_path / "c" / "epoch=1-step=4.ckpt")
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(
        CheckpointError, match=r"not a complete checkpoint .*other checkpoints there: epoch=1-step=4"
    ):
        check_resumable(good)
    torch.save({"w": torch.ones(1)}, other)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        check_resumable(other)


def test_resume_path_last_auto_and_requeued_slurm_jobs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert resume_path(run, "auto") is None  # nothing yet: start
    with pytest.raises(RunDirError, match="no checkpoint to resume"):
        resume_path(run, "last")
    last = _training_ckpt(run / "checkpoints" / "last.ckpt")
    assert resume_path(run, "auto") == resume_path(run, "last") == str(last)
    with pytest.raises(RunDirError, match="already holds a run"):
        resume_path(run, None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_path(run, None) == str(last)
    with pytest.raises(RunDirError, match="no such checkpoint file"):
        resume_path(run, str(tmp_path / "nowhere.ckpt"))


def test_cli_refuses_a_last_ckpt_that_runs_code(tmp_path, capsys):
    from medssl.cli import main

    from ..commands.conftest import smoke_args, write_png_folder

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    _training_ckpt(run / "checkpoints" / "last.ckpt", hyper_parameters={"x": _RunsCode(str(marker))})
    args = smoke_args(2, write_png_folder(tmp_path / "png"), run, "--ckpt_path", "last")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    assert not marker.exists()


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _LastSteps(pl.Callback):
    """The global_step stored in last.ckpt after every batch."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_batch_end(self, trainer, *args):
        if self.path.is_file():
            self.seen.append(torch.load(self.path, weights_only=True)["global_step"])


def _fit(tmp_path, callback, batches=7, epochs=1):
    data = DataLoader(TensorDataset(torch.randn(batches, 2)), batch_size=1)
    probe = _LastSteps(tmp_path / "ckpt" / "last.ckpt")
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=epochs,
        callbacks=[probe, callback],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Tiny(), data)
    return probe.seen, torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)


def test_last_ckpt_every_n_steps_and_at_the_end(tmp_path):
    callback = RunCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last_every_n_steps=3)
    seen, last = _fit(tmp_path, callback)
    # probe runs before the checkpoint callback: it sees the file the previous batch left
    assert seen == [3, 3, 3, 6]
    assert last["global_step"] == 7  # written again when fitting ended


def test_last_ckpt_every_minutes(tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 40))  # every call to the clock: 40 s later
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: next(clock))
    callback = RunCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=0, save_last_every_minutes=1.0)
    seen, last = _fit(tmp_path, callback, batches=5)
    assert (
        seen and seen == sorted(seen) and len(set(seen)) >= 2
    )  # written during the epoch, not only at the end
    assert last["global_step"] == 5


def test_run_checkpoint_keeps_lightnings_top_k(tmp_path):
    callback = RunCheckpoint(dirpath=tmp_path / "ckpt", save_last_every_n_steps=1, filename="{epoch}")
    _fit(tmp_path, callback, batches=3, epochs=2)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch=1.ckpt", "last.ckpt"]  # top-1 of the epoch files
