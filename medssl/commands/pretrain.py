"""``medssl pretrain``: LightningCLI over the SSL methods and the pretraining DataModule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning import Callback
from pytorch_lightning.cli import LightningArgumentParser

from medssl.callbacks import SaveBackbone
from medssl.commands.run_cli import RunCLI, build, fit, resume_path
from medssl.data.datamodule import PretrainDataModule
from medssl.evaluation.online import KNNProbe
from medssl.evaluation.views import ViewsFigure
from medssl.methods import SSLMethod


class PretrainCLI(RunCLI):
    """Recipe = ``recipes/base/pretrain.yaml`` + the recipe's delta + command-line overrides."""

    LINKS = (
        ("data.spatial_dims", "model.init_args.spatial_dims"),
        ("data.in_channels", "model.init_args.in_channels"),
        ("data.intensity", "probe.intensity"),
        ("data.spatial_size", "probe.spatial_size"),
        ("data.spacing", "probe.spacing"),
    )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(KNNProbe, "probe")  # off until probe.source is set
        super().add_arguments_to_parser(parser)


def build_cli(args: list[str]) -> PretrainCLI:
    """Parse ``args`` and instantiate model, data and trainer (nothing runs yet)."""
    return build(
        PretrainCLI,
        "pretrain",
        "pretrain",
        args,
        model_class=SSLMethod,
        datamodule_class=PretrainDataModule,
        subclass_mode_model=True,
        trainer_defaults={"callbacks": [SaveBackbone(), ViewsFigure()]},
    )


def run(args: list[str], callbacks: Sequence[Callback] = ()) -> Path:
    """Run a pretraining job (with extra ``callbacks``, e.g. to observe it); returns the run directory."""
    cli = build_cli(args)
    cli.trainer.callbacks[:0] = callbacks  # type: ignore[attr-defined]  # first: they see every step
    run_dir = Path(cli.trainer.default_root_dir)
    ckpt_path = resume_path(run_dir, cli.config.ckpt_path)
    cli.datamodule.items()  # check the whole datalist before anything is written
    fit(cli, ckpt_path)
    callbacks = getattr(cli.trainer, "callbacks", [])
    weights = next((c.path for c in callbacks if isinstance(c, SaveBackbone)), None)
    print(f"run directory: {run_dir.resolve()}")
    if weights:
        print(f"backbone weights: {weights.resolve() / 'backbone.safetensors'}")
    return run_dir
