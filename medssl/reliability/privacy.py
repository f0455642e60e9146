"""Keep file paths outside the run folder out of what a run writes (config, hparams, checkpoints, reports).

Hospital paths often carry patient names or record numbers (``/pacs/DOE_JOHN_0412/ct``). Unless the user
asks for them (``--record_paths true``), every string that is a path outside the run folder becomes
``<redacted>/<name>``, ``<name>`` being the dataset-level name ``medssl.json`` also records (the last
component that is not a generic folder such as ``images``; for a run folder's ``weights`` or
``checkpoints/last.ckpt``, the run folder's name). Paths inside the run folder, and portable ones
written with ``$MEDSSL_DATA_DIR``, stay as they are. DICOM header values are never read into items, logs or
metadata in the first place (the readers keep only geometry).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.cli import SaveConfigCallback

from medssl.export.metadata import dataset_name

REDACTED = "<redacted>"
#: Trailing path components that name no dataset or run: ``runs/simclr/weights`` is called ``simclr``.
_RUN_PARTS = {"weights", "checkpoints", "last", "bundle"}


def looks_like_path(value: str) -> bool:
    """Absolute, home- or dot-relative, or a relative path that exists (not ``val/auroc``)."""
    if not value or value.startswith("$") or "://" in value or "\n" in value:
        return False
    if os.path.isabs(value) or value.startswith(("~", "./", "../", ".\\", "..\\")):
        return True
    return ("/" in value or "\\" in value) and os.path.exists(value)


def redact_path(value: str, run_dir: Path) -> str:
    """``value`` if it is not a path or lies inside ``run_dir``; else ``<redacted>/<dataset name>``."""
    if not looks_like_path(value) or value.startswith(REDACTED):
        return value
    path = Path(os.path.abspath(os.path.expanduser(value)))
    root = Path(os.path.abspath(run_dir))
    if path == root or root in path.parents:
        return value
    parts = list(Path(value).parts)
    while len(parts) > 1 and Path(parts[-1]).stem.lower() in _RUN_PARTS:
        parts.pop()
    return f"{REDACTED}/{dataset_name(str(Path(*parts)))}"


def redact(obj: Any, run_dir: Path) -> Any:
    """A copy of ``obj`` (dicts, lists, jsonargparse Namespaces, strings) with outside paths redacted."""
    if isinstance(obj, str):
        return redact_path(obj, run_dir)
    if isinstance(obj, os.PathLike):
        return redact_path(os.fspath(obj), run_dir)
    if isinstance(obj, Namespace):
        out = Namespace()
        for key, value in vars(obj).items():
            setattr(out, key, redact(value, run_dir))
        return out
    if isinstance(obj, Mapping):
        return type(obj)({k: redact(v, run_dir) for k, v in obj.items()}) if isinstance(obj, dict) else obj
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, run_dir) for v in obj)
    return obj


class RedactPaths(pl.Callback):
    """Redact outside paths in the hyper-parameters the loggers record (``hparams.yaml``, TensorBoard,
    MLflow) and every checkpoint stores (model and DataModule). The live ``hparams`` stay as they are."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning logs ``hparams_initial`` (a copy of ``_hparams_initial``) after the set-up hooks.
        root = Path(trainer.default_root_dir)
        for owner in (pl_module, getattr(trainer, "datamodule", None)):
            initial = getattr(owner, "_hparams_initial", None)
            if initial is not None:
                owner._hparams_initial = redact(initial, root)  # type: ignore[union-attr]

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        root = Path(trainer.default_root_dir)
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = redact(dict(checkpoint[key]), root)


class RedactedConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml``, with outside paths redacted (see the module doc)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.config.get("record_paths"):
            super().setup(trainer, pl_module, stage)
            return
        full, self.config = self.config, redact(self.config, Path(trainer.default_root_dir))
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.config = full
