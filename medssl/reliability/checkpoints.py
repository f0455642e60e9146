"""Checkpoints that are never half-written, written often enough, and read without running code.

- ``AtomicCheckpointIO``: Lightning's ``_atomic_save`` writes a local checkpoint to a temporary file in the
  system temp folder and moves it into place; when that folder is on another file system (a tmpfs, a node's
  local disk) the move is a copy, and a kill during it leaves a truncated ``last.ckpt``. Here the temporary
  file sits next to the target, is flushed to disk (fsync) and then renamed over it (atomic on POSIX), so a
  reader sees the old file or the new one, never a mix. Loading always uses ``weights_only=True``.
- ``RunCheckpoint``: Lightning's ``ModelCheckpoint`` (top-k files exactly as there), plus ``last.ckpt``
  every ``save_last_every_n_steps`` optimiser steps and/or ``save_last_every_minutes``, at the end of
  fitting, and on demand (``save_last_now``, used on preemption). A write that falls due on an epoch's
  last step happens when that epoch has ended (after its validation): Lightning 2.6 resumes a checkpoint
  written in between with its epoch counters one behind.
- ``check_resumable``: a clear error naming the file when a checkpoint cannot be resumed from.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger("medssl.reliability")

TMP_MARK = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, truncated, or holding code."""


def _stay_on_cpu(storage: Any, location: Any) -> Any:
    return storage  # Lightning's default: tensors are moved to the device later


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` writing local files atomically (temp file, fsync, rename), loading safely."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transaction as in Lightning
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self, path: Any, map_location: Any = _stay_on_cpu, weights_only: bool | None = None
    ) -> Any:
        # weights_only=True whatever the caller asks: a checkpoint is data, never code.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)`` so that ``path`` is always either the old complete file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{TMP_MARK}*"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_resumable(path: Path) -> None:
    """Raise ``CheckpointError`` unless ``path`` is a complete checkpoint readable with ``weights_only``.

    Cheap: the file is memory-mapped, tensors are not read.
    """
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # a legacy (non-zip) file cannot be mapped: read it whole
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled objects other than tensors and plain containers, "
            f"and unpickling them could run code{f' ({reason})' if reason else ''}. medssl reads "
            "checkpoints with torch.load(weights_only=True) only."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        hint = f"; other checkpoints there: {', '.join(others)} (pass one with --ckpt_path)" if others else ""
        raise CheckpointError(f"{path}: not a complete checkpoint ({_first_line(err)}){hint}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no state_dict or loop state to resume)")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is also written on a step / time cadence and when fitting ends.

    Args:
        save_last_every_n_steps: write ``last.ckpt`` every this many optimiser steps (0: off).
        save_last_every_minutes: write ``last.ckpt`` when this many minutes passed since the last write
            (0: off). With both set, whichever comes first.
        **kwargs: ``ModelCheckpoint``'s own options (``monitor``, ``save_top_k``, ``every_n_epochs``, ...).
            ``save_last`` is always on.
    """

    def __init__(
        self, *, save_last_every_n_steps: int = 0, save_last_every_minutes: float = 0.0, **kwargs: Any
    ) -> None:
        if save_last_every_n_steps < 0 or save_last_every_minutes < 0:
            raise ValueError("save_last_every_n_steps and save_last_every_minutes must be >= 0")
        kwargs["save_last"] = True
        kwargs.setdefault(
            "enable_version_counter", False
        )  # last.ckpt is always last.ckpt (moved run folders)
        super().__init__(**kwargs)
        self.save_last_every_n_steps = save_last_every_n_steps
        self.save_last_every_minutes = save_last_every_minutes
        self._last_written_step = -1
        self._last_written_time = time.monotonic()
        self._due_at_epoch_end = False

    @property
    def last_path(self) -> str:
        """Where ``last.ckpt`` goes (``dirpath`` is known once fitting has started)."""
        return self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_written_time = time.monotonic()
        self._last_written_step = trainer.global_step  # the checkpoint resumed from holds this step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if not self._last_due(trainer):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # Lightning 2.6 resumes a checkpoint written between an epoch's last step and its end with
            # epoch counters one behind (and later resumes drift): write it when the epoch has ended.
            self._due_at_epoch_end = True
            return
        self.save_last_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._due_at_epoch_end:
            self._due_at_epoch_end = False
            self.save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_last_now(trainer)

    def save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` for the current step (no-op if it already holds it); top-k is unaffected."""
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        if trainer.global_step == self._last_written_step:
            return
        saved_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = saved_step  # ModelCheckpoint's own top-k schedule stays as it was

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_step = trainer.global_step
        self._last_written_time = time.monotonic()

    def _last_due(self, trainer: pl.Trainer) -> bool:
        steps = self.save_last_every_n_steps
        due = bool(steps) and trainer.global_step % steps == 0
        if self.save_last_every_minutes:
            due |= time.monotonic() - self._last_written_time >= 60 * self.save_last_every_minutes
            due = bool(trainer.strategy.broadcast(due))  # one decision for every rank
        return due and trainer.global_step != self._last_written_step
