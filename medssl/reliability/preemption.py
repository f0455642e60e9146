"""SIGTERM and SIGUSR1 (SLURM's advance warning): finish the step, write ``last.ckpt``, stop, requeue.

Lightning already turns SIGTERM into a stop at the end of the current batch (``SIGTERMException``) but
writes nothing; under SLURM with auto-requeue its SIGUSR1 handler writes an ``hpc_ckpt`` from inside the
signal handler, possibly mid-step. Here, once training has started, both signals only set a flag; at the
next step boundary (see ``Preemption``) every rank agrees to stop, ``last.ckpt`` is written atomically
(``RunCheckpoint.save_last_now``), the SLURM job is requeued when the cluster environment asks for it, and
``Preempted`` ends the run (the CLI prints where the checkpoint is and exits with ``128 + signal``). A
SIGTERM before training starts (set-up, sanity validation) is Lightning's: the run stops, writing nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import ModelCheckpoint

from medssl.reliability.checkpoints import RunCheckpoint

log = logging.getLogger("medssl.reliability")

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a signal after writing ``checkpoint``; resume with ``--ckpt_path last``."""

    def __init__(
        self,
        signum: int,
        checkpoint: str | None,
        step: int,
        requeued: bool = False,
        advice: str | None = None,
    ) -> None:
        self.signum, self.checkpoint, self.step, self.requeued = signum, checkpoint, step, requeued
        self.advice = advice  # how to go on, when not ``--ckpt_path last`` (e.g. a sweep of runs)
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint could be written"
        go_on = advice or "resume with --ckpt_path last (or auto)"
        then = "the SLURM job was requeued" if requeued else go_on
        super().__init__(f"stopped by {name} at step {step}: {saved}; {then}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signum, self.checkpoint, self.step, self.requeued, self.advice)


class Preemption(pl.Callback):
    """Checkpoint-and-exit on SIGTERM / SIGUSR1 (see the module doc).

    The stop comes after a training step's hooks (the EMA update included) and, when the step ends an
    epoch, after that epoch's validation and ``on_train_epoch_end``: Lightning 2.6 resumes a checkpoint
    written between an epoch's last step and its end with epoch counters one behind, and every later resume
    then drifts (``tests/reliability/test_resume.py``).

    Args:
        requeue: under SLURM with ``auto_requeue`` (Lightning's default there), requeue the job after
            saving (``scontrol requeue``).
    """

    def __init__(self, requeue: bool = True) -> None:
        self.requeue = requeue
        self.received: int | None = None
        self._at_epoch_end = False

    # --- signals -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before Lightning registers its handlers: finding one for SIGUSR1, it does not install its SLURM
        # handler, which writes a checkpoint from inside the signal handler, mid-step.
        self.received, self._at_epoch_end = None, False
        self._listen(signal.SIGUSR1)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's: ours replace its SIGTERM handler, which would stop the run right after an
        # epoch's last step (before the epoch ends). Lightning restores the previous handlers at teardown.
        self._listen(*SIGNALS)

    def _listen(self, *signums: int) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in signums:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: stopping after the current step", signal.Signals(signum).name)

    # --- stopping --------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._at_epoch_end = True  # stop once the epoch has ended (see the class doc)
            return
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._at_epoch_end or trainer.strategy.reduce_boolean_decision(
            self.received is not None, all=False
        ):
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        signum = self.received or signal.SIGTERM
        path = self._save(trainer)
        requeued = self._requeue(trainer)
        raise Preempted(signum, path, trainer.global_step, requeued)

    def _save(self, trainer: pl.Trainer) -> str | None:
        callback = next((c for c in trainer.callbacks if isinstance(c, RunCheckpoint)), None)  # type: ignore[attr-defined]
        if callback is not None:
            callback.save_last_now(trainer)
        elif isinstance(trainer.checkpoint_callback, ModelCheckpoint):
            target = trainer.checkpoint_callback
            path = target.format_checkpoint_name({}, target.CHECKPOINT_NAME_LAST)
            target.last_model_path = path
            trainer.save_checkpoint(path)
        return _last_path(trainer)

    def _requeue(self, trainer: pl.Trainer) -> bool:
        environment = trainer._accelerator_connector.cluster_environment
        if not (self.requeue and isinstance(environment, SLURMEnvironment) and environment.auto_requeue):
            return False
        if not trainer.is_global_zero:
            return True
        job = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        try:
            done = subprocess.run(["scontrol", "requeue", job], check=False).returncode == 0
        except OSError as err:
            log.warning("could not requeue SLURM job %s: %s", job, err)
            return False
        if not done:
            log.warning("scontrol requeue %s failed", job)
        return done


def _last_path(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback is not None else ""
    return path if path and Path(path).is_file() else None
