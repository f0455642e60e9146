"""Pretrained vs scratch: the same fine-tuning recipe over label fractions x seeds, one run per trial.

Each trial is a normal ``medssl finetune`` run in ``<out>/<init>/<mode>/fraction<f>_seed<s>/``: the
pretrained and the scratch trial of a (fraction, seed) see the same training cases and the same seed, and
differ only in ``--model.pretrained``. A trial whose ``test_metrics.json`` exists is not run again, and one
that stopped on a signal (SIGTERM, a SLURM preemption) resumes from its ``last.ckpt``, so a sweep that
stopped can be started again and only finishes what is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medssl.logging_setup import quiet_lightning
from medssl.reliability.preemption import Preempted

_RESULT = {False: "test_metrics.json", True: "frozen_metrics.json"}  # by "is the trial frozen"

SCRATCH = "scratch"

TASK_MODES = {  # what each task's trials can be
    "classification": ("finetune", "linear_probe", "frozen"),  # frozen: medssl evaluate (L-BFGS probe, kNN)
    "segmentation": ("finetune", "frozen_encoder"),  # frozen_encoder: decoder and head trained only
}


@dataclass(frozen=True)
class Trial:
    """One fine-tuning run of the sweep."""

    init: str  # "scratch" or the label of a pretrained source
    pretrained: str  # "none" or the source given to --model.pretrained
    mode: str  # one of TASK_MODES[task]
    label_fraction: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.init}/{self.mode}/fraction{self.label_fraction:g}_seed{self.seed}"


def plan(
    pretrained: dict[str, str],
    label_fractions: Sequence[float],
    seeds: Sequence[int],
    modes: Sequence[str] = ("finetune",),
    scratch: bool = True,
) -> list[Trial]:
    """Every (init, mode, fraction, seed), smallest fractions first, scratch beside each pretrained run."""
    inits = ({SCRATCH: "none"} if scratch else {}) | dict(pretrained)
    return [
        Trial(init, source, mode, fraction, seed)
        for fraction in sorted(label_fractions)
        for seed in seeds
        for mode in modes
        for init, source in inits.items()
    ]


def trial_args(trial: Trial, recipe: str, run_dir: Path, overrides: Sequence[str]) -> list[str]:
    """The ``medssl finetune`` arguments of a trial (the user's overrides cannot change what is swept)."""
    mode = ["--model.mode", trial.mode] if trial.mode != "frozen" else []
    return [
        "--config",
        recipe,
        *overrides,
        "--model.pretrained",
        trial.pretrained,
        *mode,
        "--data.label_fraction",
        f"{trial.label_fraction:g}",
        "--data.seed",
        str(trial.seed),
        "--seed_everything",
        str(trial.seed),
        "--trainer.default_root_dir",
        str(run_dir),
    ]


def run_sweep(
    trials: Sequence[Trial], recipe: str, out: Path, overrides: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run (or reuse) every trial; a record per trial with its test metrics and training-set size."""
    from medssl.commands import evaluate, finetune
    from medssl.commands.run_cli import UsageError

    task = finetune.recipe_task(["--config", recipe, *overrides])
    wrong = sorted({t.mode for t in trials} - set(TASK_MODES[task]))
    if wrong:
        raise UsageError(f"{task} recipes take --modes {' '.join(TASK_MODES[task])}, not {' '.join(wrong)}")
    records = []
    for number, trial in enumerate(trials, 1):
        run_dir = out / trial.folder
        started, reused = time.monotonic(), (run_dir / _RESULT[trial.mode == "frozen"]).is_file()
        if not reused:
            resume = _resumable(trial, run_dir)
            if run_dir.exists() and not resume:  # stopped before its first checkpoint: start it again
                shutil.rmtree(run_dir)
            if resume:
                print(f"trial {number}/{len(trials)} {trial.folder}: resuming from {resume}", flush=True)
            args = trial_args(trial, recipe, run_dir, overrides) + (["--ckpt_path", "last"] if resume else [])
            try:
                with quiet_lightning():
                    (evaluate if trial.mode == "frozen" else finetune).run(args, verbose=False)
            except Preempted as stop:  # the advice is to run the sweep again, not the trial
                again = "run the same medssl compare again: finished trials are reused, this one resumes"
                raise Preempted(stop.signum, stop.checkpoint, stop.step, stop.requeued, again) from None
        records.append(_record(trial, run_dir))
        metric = default_metric(records)
        took = "reused" if reused else f"{time.monotonic() - started:.0f} s"
        value = records[-1]["metrics"][metric]
        print(f"trial {number}/{len(trials)} {trial.folder}: {metric} {value:.4f} ({took})", flush=True)
    return records


def write_results(out: Path, records: list[dict[str, Any]], recipe: str, metric: str) -> Path:
    """``<out>/compare.json``: every trial's record, the recipe and the metric the report is judged by."""
    path = out / "compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"recipe": recipe, "metric": metric, "trials": records}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def default_metric(records: list[dict[str, Any]]) -> str:
    """``test/dice`` for segmentation (binary masks log a pixel ``test/auroc`` too), else ``test/auroc``."""
    keys = set(records[0]["metrics"]) if records else set()
    return next((k for k in ("test/dice", "test/auroc") if k in keys), sorted(keys)[0] if keys else "")


def _resumable(trial: Trial, run_dir: Path) -> Path | None:
    """The ``last.ckpt`` of a fine-tuning trial that stopped part-way (frozen trials fit in seconds)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if trial.mode != "frozen" and last.is_file() else None


def _record(trial: Trial, run_dir: Path) -> dict[str, Any]:
    if trial.mode == "frozen":  # the linear probe's metrics as test/*, the kNN's as test/knn_*
        report = json.loads((run_dir / _RESULT[True]).read_text())
        frozen = report["metrics"]
        metrics = {k.replace("linear/test/", "test/"): v for k, v in frozen.items() if "linear/test/" in k}
        metrics |= {k.replace("knn/test/", "test/knn_"): v for k, v in frozen.items() if "knn/test/" in k}
        train_images = report["images"]["train"]
    else:
        metrics = json.loads((run_dir / _RESULT[False]).read_text())["metrics"]
        train_images = len(json.loads((run_dir / "splits.json").read_text())["train"])
    return {**asdict(trial), "run": trial.folder, "train_images": train_images, "metrics": metrics}
