import csv
import math
from pathlib import Path

import pytest

from medssl.cli import main
from medssl.data.paths import data_dir
from medssl.recipes_dir import recipes_dir

RECIPES = recipes_dir() / "pretrain"

#: A few CPU steps on a small subset: enough to show that a recipe runs end to end on real data.
SHORT_RUN = [
    "--data.limit", "48",
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--trainer.max_steps", "3",
    "--trainer.limit_val_batches", "1",
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.fixture(scope="session")
def real_data():
    """The real datasets folder (``$MEDSSL_DATA_DIR`` or ``../shared/data``); skips when absent."""
    root = data_dir()
    if not (root / "pneumoniamnist").is_dir():
        pytest.skip(f"real data not found at {root} (set MEDSSL_DATA_DIR)")
    return root


def pretrain(recipe: str, run_dir: Path, *extra: str) -> list[dict[str, str]]:
    """``medssl pretrain`` with ``recipes/pretrain/<recipe>.yaml``; the rows of its metrics.csv."""
    args = [
        "pretrain",
        "--config",
        str(RECIPES / f"{recipe}.yaml"),
        "--trainer.default_root_dir",
        str(run_dir),
    ]
    assert main([*args, *extra]) == 0
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def assert_short_run(rows: list[dict[str, str]], run_dir: Path) -> None:
    """Three finite step losses were logged and the backbone weights were written."""
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert (run_dir / "weights" / "backbone.safetensors").is_file()


def epoch_losses(rows: list[dict[str, str]]) -> list[float]:
    return epoch_means(rows, "train/loss")


def epoch_means(rows: list[dict[str, str]], key: str) -> list[float]:
    """Per-epoch means of a logged training term, e.g. ``train/loss_in_batch``."""
    return [float(r[f"{key}_epoch"]) for r in rows if r.get(f"{key}_epoch")]


def learning_run(limit: int, epochs: int, batch_size: int = 32) -> list[str]:
    """Overrides of a short learning run: a seeded subset of ``limit`` images, one warm-up epoch."""
    return [
        "--data.limit", str(limit),
        "--data.batch_size", str(batch_size),
        "--data.num_workers", "0",
        "--trainer.max_epochs", str(epochs),
        "--trainer.enable_progress_bar", "false",
        "--model.init_args.warmup_epochs", "1",
    ]  # fmt: skip


def resnet10(backbone_kwargs: str) -> list[str]:
    return ["--model.init_args.backbone", "resnet10", "--model.init_args.backbone_kwargs", backbone_kwargs]
