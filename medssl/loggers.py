"""Loggers for a run directory: metrics straight in the folder, kept (appended to) when a run resumes."""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


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


def default_loggers(run_dir: str | Path) -> list[Logger]:
    """CSV metrics in the run directory, plus TensorBoard events in ``tensorboard/`` when installed."""
    loggers: list[Logger] = [RunCSVLogger(run_dir)]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    except ModuleNotFoundError:
        pass
    return loggers
