"""Loggers for a run directory, chosen by name (``loggers: [csv, tensorboard, mlflow]`` in a recipe).

- ``csv``: ``metrics.csv`` and ``hparams.yaml`` straight in the run directory, continued when a run resumes.
  Always on: it is the run's record, and the first logger decides where checkpoints go
  (``<run dir>/checkpoints``).
- ``tensorboard``: event files in ``<run dir>/tensorboard/`` (``tensorboard --logdir <run dir>``).
- ``mlflow``: a local MLflow file store in ``<run dir>/mlruns`` (``mlflow ui --backend-store-uri
  <run dir>/mlruns``), or any tracking URI in ``$MLFLOW_TRACKING_URI``.

``log_image`` sends a figure to every logger of a trainer that takes images (TensorBoard, MLflow).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

LoggerName = Literal["csv", "tensorboard", "mlflow"]
LOGGER_NAMES: tuple[str, ...] = ("csv", "tensorboard", "mlflow")
MLFLOW_EXPERIMENT = "medssl"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one continues it."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` and ``hparams.yaml`` directly in the run directory, continued on resume."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(run_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, ExperimentWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _tensorboard(run_dir: Path) -> Logger:
    from pytorch_lightning.loggers import TensorBoardLogger

    try:
        return TensorBoardLogger(run_dir, name="tensorboard", version="")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "loggers: tensorboard needs the tensorboard package: pip install 'medssl[tensorboard]'"
        ) from error


def mlflow_tracking_uri(run_dir: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else a file store in ``<run dir>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (run_dir.absolute() / "mlruns").as_uri()


def _mlflow(run_dir: Path) -> Logger:
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.loggers.mlflow import _MLFLOW_AVAILABLE

    if not _MLFLOW_AVAILABLE:
        raise ModuleNotFoundError("loggers: mlflow needs the mlflow package: pip install 'medssl[mlflow]'")
    uri = mlflow_tracking_uri(run_dir)
    if uri.startswith("file:"):
        # MLflow 3 keeps the file store only behind this opt-in; it is the store that needs no server.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name=MLFLOW_EXPERIMENT, run_name=run_dir.absolute().name, tracking_uri=uri)


_BUILDERS = {"csv": RunCSVLogger, "tensorboard": _tensorboard, "mlflow": _mlflow}


def build_loggers(names: Sequence[str], run_dir: str | Path) -> list[Logger]:
    """CSV plus the other loggers in ``names`` (from ``LOGGER_NAMES``) for ``run_dir``, CSV first."""
    unknown = [name for name in names if name not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown logger(s) {unknown}; choose from {', '.join(LOGGER_NAMES)}")
    chosen = [name for name in LOGGER_NAMES if name == "csv" or name in names]
    return [_BUILDERS[name](Path(run_dir)) for name in chosen]


def default_loggers(run_dir: str | Path) -> list[Logger]:
    """CSV metrics in the run directory: what a run gets when its recipe names no loggers."""
    return build_loggers(["csv"], run_dir)


@rank_zero_only
def log_image(trainer: pl.Trainer, tag: str, rgb: np.ndarray, step: int | None = None) -> list[str]:
    """Log the ``(H, W, 3)`` uint8 image ``rgb`` to every logger that takes images; their class names."""
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

    step = trainer.global_step if step is None else step
    done = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, rgb, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, rgb, key=tag.replace("/", "_"), step=step)
        else:
            continue
        done.append(type(logger).__name__)
    return done
