"""``medssl pretrain``: LightningCLI over the SSL methods and the pretraining DataModule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medssl.callbacks import SaveBackbone
from medssl.data.datamodule import PretrainDataModule
from medssl.loggers import default_loggers
from medssl.methods import SSLMethod
from medssl.recipes_dir import recipes_dir


class RunDirError(ValueError):
    """The run directory and the resume request do not fit together."""


class PretrainCLI(LightningCLI):
    """Recipe = ``recipes/base/pretrain.yaml`` + the recipe's delta + command-line overrides."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume: 'last' (the run directory's last.ckpt) or a checkpoint path",
        )
        parser.link_arguments("data.spatial_dims", "model.init_args.spatial_dims")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(Path(config.get("default_root_dir") or "."))
        return super().instantiate_trainer(**kwargs)


def build_cli(args: list[str]) -> PretrainCLI:
    """Parse ``args`` and instantiate model, data and trainer (nothing runs yet)."""
    with patch.object(sys, "argv", ["medssl pretrain"]):  # args come from us, not from sys.argv
        return PretrainCLI(
            SSLMethod,
            PretrainDataModule,
            subclass_mode_model=True,
            run=False,
            args=args,
            parser_kwargs={"default_config_files": [str(recipes_dir() / "base" / "pretrain.yaml")]},
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [SaveBackbone()]},
        )


def run(args: list[str]) -> Path:
    """Run a pretraining job; returns the run directory."""
    cli = build_cli(args)
    run_dir = Path(cli.trainer.default_root_dir)
    ckpt_path = _resume_path(run_dir, cli.config.ckpt_path)
    cli.datamodule.items()  # check the whole datalist before anything is written
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    callbacks = getattr(cli.trainer, "callbacks", [])
    weights = next((c.path for c in callbacks if isinstance(c, SaveBackbone)), None)
    print(f"run directory: {run_dir.resolve()}")
    if weights:
        print(f"backbone weights: {weights.resolve() / 'backbone.safetensors'}")
    return run_dir


def _resume_path(run_dir: Path, ckpt_path: str | None) -> str | None:
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
