"""What every training command shares: LightningCLI with a base recipe, one run directory, safe resume."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medssl.loggers import LoggerName, build_loggers
from medssl.recipes_dir import recipes_dir


class RunDirError(ValueError):
    """The run directory and the resume request do not fit together."""


class UsageError(ValueError):
    """A command was asked for something it cannot do (e.g. the wrong kind of recipe)."""


class RunCLI(LightningCLI):
    """LightningCLI whose run writes everything into ``trainer.default_root_dir``.

    Subclasses link the DataModule options the module must agree with (``LINKS``).
    """

    LINKS: tuple[tuple[str, str], ...] = ()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume: 'last' (the run directory's last.ckpt) or a checkpoint path",
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
        if config.get("logger") in (None, True):
            names = self._get(self.config_init, "loggers", default=["csv"])
            kwargs["logger"] = build_loggers(names, Path(config.get("default_root_dir") or "."))
        return super().instantiate_trainer(**kwargs)


def build(cli_class: type[RunCLI], command: str, base_recipe: str, args: list[str], **kwargs: Any) -> Any:
    """Parse ``args`` over ``recipes/base/<base_recipe>.yaml`` and instantiate everything (nothing runs)."""
    with patch.object(sys, "argv", [f"medssl {command}"]):  # args come from us, not from sys.argv
        return cli_class(
            run=False,
            args=args,
            parser_kwargs={"default_config_files": [str(recipes_dir() / "base" / f"{base_recipe}.yaml")]},
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )


def resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from; refuses to start a second run over an existing one."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path == "last":
        if not last.is_file():
            raise RunDirError(f"--ckpt_path last: no checkpoint to resume at {last}")
        return str(last)
    if ckpt_path is None and last.is_file():
        raise RunDirError(
            f"{run_dir} already holds a run ({last}); resume it with --ckpt_path last "
            "or start a new one with --trainer.default_root_dir <new folder>"
        )
    return ckpt_path
