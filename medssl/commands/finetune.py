"""``medssl finetune``: LightningCLI over the fine-tuning modules; fit, then test the best checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser

from medssl.commands.run_cli import RunCLI, build, fit, resume_path
from medssl.finetune.classification import ClassificationModule
from medssl.reliability.privacy import redact_path

log = logging.getLogger("medssl.finetune")

#: DataModule options the module must agree with, linked on the command line.
LINKED = ("spatial_dims", "in_channels", "num_classes", "multi_label")


TASKS = ("classification", "segmentation")


class FinetuneCLI(RunCLI):
    """Classification: ``recipes/base/finetune.yaml`` + the recipe's delta + command-line overrides."""

    LINKS = tuple((f"data.{key}", f"model.{key}") for key in LINKED)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--task", choices=TASKS, default="classification", help="set by the recipe")


class SegmentationCLI(FinetuneCLI):
    """Segmentation: ``recipes/base/finetune_seg.yaml`` + the recipe's delta + command-line overrides."""

    LINKS = tuple((f"data.{key}", f"model.{key}") for key in ("spatial_dims", "in_channels", "num_classes"))


def recipe_task(args: list[str]) -> str:
    """The ``task`` named by the last ``--config`` recipe or ``--task``; ``classification`` by default."""
    task = "classification"
    pairs = [a.split("=", 1) if "=" in a else [a, b] for a, b in zip(args, [*args[1:], ""], strict=True)]
    for flag, value in pairs:
        if flag == "--config" and Path(value).is_file():
            recipe = yaml.safe_load(Path(value).read_text())
            task = recipe.get("task", task) if isinstance(recipe, dict) else task
        elif flag == "--task":
            task = value
    return task


def build_cli(args: list[str]) -> FinetuneCLI:
    """Parse ``args`` and instantiate module (loading the pretrained weights), data and trainer."""
    if recipe_task(args) == "segmentation":
        from medssl.finetune.seg_data import SegmentationDataModule
        from medssl.finetune.segmentation import SegmentationModule

        return build(
            SegmentationCLI,
            "finetune",
            "finetune_seg",
            args,
            model_class=SegmentationModule,
            datamodule_class=SegmentationDataModule,
        )
    from medssl.finetune.cls_data import ClassificationDataModule

    return build(
        FinetuneCLI,
        "finetune",
        "finetune",
        args,
        model_class=ClassificationModule,
        datamodule_class=ClassificationDataModule,
    )


def run(args: list[str], *, verbose: bool = True) -> Path:
    """Fine-tune, test the best checkpoint on the test split, write ``test_metrics.json``; the run dir."""
    cli = build_cli(args)
    run_dir = Path(cli.trainer.default_root_dir)
    ckpt_path = resume_path(run_dir, cli.config.ckpt_path)
    cli.datamodule.items()  # check the whole datalist before anything is written
    fit(cli, ckpt_path)
    best = best_checkpoint(cli.trainer)
    results = cli.trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False, weights_only=True
    )
    metrics = {key: float(value) for key, value in sorted(results[0].items())}
    write_test_metrics(
        run_dir, metrics, checkpoint=best, model=cli.model, record_paths=bool(cli.config.record_paths)
    )
    if not verbose:
        return run_dir
    print(f"run directory: {run_dir.resolve()}")
    print(f"test metrics (checkpoint {best or 'last weights'}):")
    for key, value in metrics.items():
        print(f"  {key}: {value:.4f}")
    return run_dir


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The monitored ModelCheckpoint's best file, else None (the weights at the end of fitting)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    log.warning(
        "no best checkpoint (no monitored ModelCheckpoint or no validation): testing the last weights"
    )
    return None


def write_test_metrics(
    run_dir: Path,
    metrics: dict[str, float],
    *,
    checkpoint: str | None,
    model: Any,
    record_paths: bool = False,
) -> Path:
    """``<run dir>/test_metrics.json``: the metrics, the checkpoint tested and the pretrained source (a path
    outside the run folder redacted to its name unless ``record_paths``)."""
    out = run_dir / "test_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    source = model.load_report.source
    pretrained = source if record_paths else redact_path(source, run_dir)
    report = {"checkpoint": checkpoint, "pretrained": pretrained, "metrics": metrics}
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out
