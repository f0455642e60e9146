"""Loggers through the CLI: CSV by default, TensorBoard / MLflow by one recipe line, images, progress bars."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medssl.cli import main
from medssl.loggers import build_loggers
from medssl.recipes_dir import recipes_dir

from .conftest import SMOKE, smoke_args

pytestmark = pytest.mark.slow

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard (medssl[tensorboard])"
)
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs medssl[mlflow]")


def _recipe(tmp_path: Path, content: dict) -> str:
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _tensorboard_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: set[str] = set()
    for events in (run / "tensorboard").glob("events.out.tfevents.*"):  # fit and test may write one each
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags = accumulator.Tags()
        found |= set(tags["images"]) | set(tags["scalars"])
    return found


def _mlflow_run(run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "medssl"]
    (found,) = client.search_runs([experiment.experiment_id])
    artifacts = [a.path for a in client.list_artifacts(found.info.run_id, "images")]
    return client, found, artifacts


def test_unknown_logger_names_are_refused() -> None:
    with pytest.raises(ValueError, match="choose from csv, tensorboard, mlflow"):
        build_loggers(["wandb"], "runs/x")


def test_default_run_logs_csv_only_and_saves_its_views(tmp_path, png_folder):
    run = tmp_path / "run"
    assert main(smoke_args(2, png_folder, run)) == 0
    assert (run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "tensorboard").exists() and not (run / "mlruns").exists()
    with Image.open(run / "views" / "step_000000.png") as png:  # 4 images x (view_0, view_1)
        assert png.height > 4 * 64 and png.width > 2 * 64


@needs_tensorboard
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tensorboard_by_one_recipe_line_gets_metrics_and_views(
    tmp_path, png_folder, nifti_folder, spatial_dims
):
    run = tmp_path / "run"
    source = png_folder if spatial_dims == 2 else nifti_folder
    extra = _recipe(tmp_path, {"loggers": ["tensorboard"]})
    assert main(smoke_args(spatial_dims, source, run, "--config", extra)) == 0
    tags = _tensorboard_tags(run)
    assert {"train/views", "train/loss_step", "val/loss"} <= tags
    assert (run / "metrics.csv").is_file()  # CSV stays on
    assert (run / "checkpoints" / "last.ckpt").is_file()  # checkpoints stay in the run dir


@needs_mlflow
def test_mlflow_file_store_in_the_run_dir_gets_metrics_views_and_reconstructions(tmp_path, png_folder):
    run = tmp_path / "run"
    args = ["pretrain", "--config", str(SMOKE / "mae_2d.yaml"), "--data.source", str(png_folder)]
    assert main([*args, "--trainer.default_root_dir", str(run), "--loggers+", "mlflow"]) == 0
    client, found, artifacts = _mlflow_run(run)
    assert found.info.run_name == "run"
    history = client.get_metric_history(found.info.run_id, "train/loss_step")
    assert len(history) >= 2 and all(np.isfinite(m.value) for m in history)
    names = " ".join(artifacts)
    assert "train_views" in names and "val_reconstructions" in names
    assert (run / "reconstructions" / "epoch_001.png").is_file()


@needs_tensorboard
def test_mae_reconstructions_go_to_tensorboard(tmp_path, nifti_folder):
    run = tmp_path / "run"
    args = ["pretrain", "--config", str(SMOKE / "mae_3d.yaml"), "--data.source", str(nifti_folder)]
    assert main([*args, "--trainer.default_root_dir", str(run), "--loggers", "[tensorboard]"]) == 0
    assert "val/reconstructions" in _tensorboard_tags(run)


def test_lightning_progress_bar_shows_when_enabled(tmp_path, png_folder, capsys):
    run = tmp_path / "run"
    assert main(smoke_args(2, png_folder, run, "--trainer.enable_progress_bar", "true")) == 0
    out = capsys.readouterr().out  # Lightning's TQDM bars write to stdout
    assert "Epoch 1" in out and "train/loss" in out


def _write_blobs(root: Path, count: int = 8, size: int = 32) -> Path:
    """``images/`` + ``labels/`` PNG pairs: noise with one bright disc (class 1)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cy, cx = rng.uniform(8, size - 8, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < 25).astype(np.uint8)
        image = np.clip((rng.normal(0.25, 0.1, mask.shape) + 0.6 * mask) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case_{i:02d}.png")
        Image.fromarray(mask).save(root / "labels" / f"case_{i:02d}.png")
    return root


@needs_tensorboard
def test_segmentation_finetuning_saves_and_logs_overlays(tmp_path):
    source = _write_blobs(tmp_path / "blobs")
    run = tmp_path / "run"
    tiny = {
        "task": "segmentation",
        "model": {"backbone": "unet", "backbone_kwargs": {"features": [4, 4, 8, 8, 16, 4]}},
        "data": {"spatial_dims": 2, "num_classes": 2, "patch_size": [32, 32], "batch_size": 4},
        "trainer": {"max_epochs": 2, "log_every_n_steps": 1, "enable_progress_bar": False},
        "loggers": ["tensorboard"],
    }
    args = [
        "finetune",
        "--config",
        str(recipes_dir() / "finetune" / "seg_unet_hippocampus_3d.yaml"),
        "--config",
        _recipe(tmp_path, tiny),
        "--data.source",
        str(source),
        "--data.num_workers",
        "0",
        "--data.test_fraction",
        "0.25",
        "--data.val_fraction",
        "0.25",
        "--model.pretrained",
        "none",
        "--model.class_names",
        "[blob]",
        "--trainer.default_root_dir",
        str(run),
    ]
    assert main(args) == 0
    figures = sorted(p.name for p in (run / "overlays").iterdir())
    assert figures == ["epoch_000.png", "epoch_001.png"]
    with Image.open(run / "overlays" / "epoch_001.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels[..., 0].astype(int) - pixels[..., 1] > 60).any()  # the class colour (red) is drawn
    assert "val/overlays" in _tensorboard_tags(run)
