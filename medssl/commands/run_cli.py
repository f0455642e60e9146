"""What every training command shares: LightningCLI with a base recipe, one run directory, safe resume."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any
from unittest.mock import patch

from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from medssl.loggers import LoggerName, build_loggers
from medssl.recipes_dir import recipes_dir
from medssl.reliability.checkpoints import AtomicCheckpointIO, check_resumable
from medssl.reliability.preemption import SIGNALS, Preempted, Preemption
from medssl.reliability.privacy import RedactedConfig, RedactPaths
from medssl.reliability.rng import RestoreRNG

log = logging.getLogger("medssl")


class RunDirError(ValueError):
    """The run directory and the resume request do not fit together."""


class UsageError(ValueError):
    """A command was asked for something it cannot do (e.g. the wrong kind of recipe)."""


class RunCLI(LightningCLI):
    """LightningCLI whose run writes everything into ``trainer.default_root_dir``.

    Every run also gets: atomic checkpoint writes read back with ``weights_only=True``, checkpoint-and-exit
    on SIGTERM / SIGUSR1, the global random states in its checkpoints, and paths outside the run folder
    redacted from what it writes (``--record_paths true`` keeps them). Subclasses link the DataModule
    options the module must agree with (``LINKS``).
    """

    LINKS: tuple[tuple[str, str], ...] = ()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume: 'last' (the run directory's last.ckpt), 'auto' (last.ckpt if there is one, else "
            "start; for requeued jobs) or a checkpoint path",
        )
        parser.add_argument(
            "--record_paths",
            type=bool,
            default=False,
            help="keep file paths outside the run directory in config.yaml, hparams and checkpoints",
        )
        parser.add_argument(
            "--loggers",
            type=list[LoggerName],
            default=["csv"],
            help="where metrics and figures go, inside the run directory: csv (metrics.csv, always), "
            "tensorboard (tensorboard/), mlflow (mlruns/, a local MLflow file store); "
            "e.g. --loggers+ mlflow. Ignored when trainer.logger is set",
        )
        for source, target in self.LINKS:
            parser.link_arguments(source, target)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        redact_paths = not self._get(self.config_init, "record_paths", default=False)
        if config.get("logger") in (None, True):
            names = self._get(self.config_init, "loggers", default=["csv"])
            kwargs["logger"] = build_loggers(names, Path(config.get("default_root_dir") or "."))
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        callbacks += [Preemption(), RestoreRNG()] + ([RedactPaths()] if redact_paths else [])
        kwargs["callbacks"] = callbacks
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def build(cli_class: type[RunCLI], command: str, base_recipe: str, args: list[str], **kwargs: Any) -> Any:
    """Parse ``args`` over ``recipes/base/<base_recipe>.yaml`` and instantiate everything (nothing runs)."""
    with patch.object(sys, "argv", [f"medssl {command}"]):  # args come from us, not from sys.argv
        return cli_class(
            run=False,
            args=args,
            parser_kwargs={"default_config_files": [str(recipes_dir() / "base" / f"{base_recipe}.yaml")]},
            save_config_callback=RedactedConfig,
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )


def resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from (checked loadable); refuses to start a second run over an existing one.

    ``auto`` resumes from ``last.ckpt`` when there is one and starts afresh otherwise; a SLURM job that was
    requeued (``SLURM_RESTART_COUNT`` > 0) without ``--ckpt_path`` behaves as ``auto``.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        log.info("requeued SLURM job: resuming from %s if it exists", last)
        ckpt_path = "auto"
    if ckpt_path == "auto":
        ckpt_path = "last" if last.is_file() else None
        if ckpt_path is None:
            return None
    if ckpt_path == "last":
        if not last.is_file():
            raise RunDirError(f"--ckpt_path last: no checkpoint to resume at {last}")
        ckpt_path = str(last)
    elif ckpt_path is None:
        if last.is_file():
            raise RunDirError(
                f"{run_dir} already holds a run ({last}); resume it with --ckpt_path last "
                "or start a new one with --trainer.default_root_dir <new folder>"
            )
        return None
    if not Path(ckpt_path).is_file():
        raise RunDirError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
    check_resumable(Path(ckpt_path))
    return ckpt_path


def fit(cli: RunCLI, ckpt_path: str | None) -> None:
    """``trainer.fit`` reading checkpoints with ``weights_only=True``; a stop on SIGTERM raises ``Preempted``.

    The process's signal handlers are the same afterwards as before.
    """
    handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        with warnings.catch_warnings():
            # medssl's samplers (DataOrder) continue mid-epoch exactly (tests/reliability/test_resume.py);
            # Lightning, not seeing its own loader-state interface, would warn the resumed run is unreliable
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:  # Lightning's own stop (SIGTERM during validation): last.ckpt was written
        callback = cli.trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", None) or None
        raise Preempted(signal.SIGTERM, last, cli.trainer.global_step) from None
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
