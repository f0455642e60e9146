"""What the speed and memory benchmarks share: the machine's state, step timing, peak memory, results files.

A "step" is timed from the start of one training batch to the start of the next, so it holds everything a
training loop does per batch (fetching the batch, forward, backward, optimiser and scheduler step, hooks,
logging). Sides being compared alternate in one process (``workloads.Interleave``), so a change of machine
load hits all of them; the figure reported is the median.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import monai
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

RESULTS = Path(__file__).resolve().parent / "results"


def environment(threads: int) -> dict[str, Any]:
    """Versions, threads, CPU model and the 1/5/15-minute load averages (the machine is shared)."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "torch": torch.__version__,
        "monai": monai.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average": list(os.getloadavg()),
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


class RepeatBatch(Dataset):
    """The same ready-made batch ``length`` times (use with ``batch_size=None``): no data cost on any side."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batch


def repeat_loader(batch: dict[str, torch.Tensor], steps: int) -> DataLoader:
    return DataLoader(RepeatBatch(batch, steps), batch_size=None)


class StepTimer(pl.Callback):
    """``perf_counter`` at the start of every training batch (Lightning side of a comparison)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.starts.append(time.perf_counter())


def step_times(starts: list[float], skip: int = 1) -> list[float]:
    """Intervals between batch starts, without the first ``skip`` (warm-up: optimiser state, caches)."""
    return [b - a for a, b in itertools.pairwise(starts)][skip:]


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)}
        for name, t in times.items()
    }


def quiet_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """A Trainer that writes nothing (for benchmarks that time only the model, not the run's bookkeeping)."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": root,
    }
    return pl.Trainer(**{**options, **kwargs})


def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib(key: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak since the last reset (``VmHWM``) resident memory in MiB."""
    for line in _lines("/proc/self/status"):
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status: peak memory needs Linux")


def write_results(name: str, result: dict[str, Any], markdown: str, out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def load_line(env: dict[str, Any], after: list[float] | None = None) -> str:
    before = env["load_average"]
    text = f"1/5/15-min load average {before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f} before"
    if after:
        text += f", {after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f} after"
    return text + f" ({env['cores']} cores, shared machine)"


def chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size
