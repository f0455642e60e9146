"""Data pipeline: the share of training wall time the loop waits for the next batch, default recipes.

``medssl pretrain`` on real data (``$MEDSSL_DATA_DIR``) with the shipped recipes, unchanged except for the
run length: ``simclr_resnet18_pneumoniamnist_2d`` (28 px chest X-rays, batch 128) and
``simclr_resnet18_hippocampus_3d`` (T1 MRI, 32^3 views, batch 16); caching on (``cache: memory``, filled in
``setup``, before training), 2 loader workers. Lightning's ``SimpleProfiler`` times every fetch of a batch
(``train_dataloader_next``); the ratio judged is the summed fetch time over the training wall time after
``--warmup`` steps (target <= 5 %). Validation is switched off: it is not the training loop.

    python benchmarks/data_pipeline.py                 # ~5 min on 2 quiet cores
    python benchmarks/data_pipeline.py --quick         # smoke test: 4 steps, 16 images
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from bench_utils import environment, load_line, write_results

from medssl.commands.pretrain import build_cli
from medssl.data.paths import data_dir
from medssl.recipes_dir import recipes_dir

TARGET = 0.05
RECIPES = ("simclr_resnet18_pneumoniamnist_2d", "simclr_resnet18_hippocampus_3d")
FETCH = "[_TrainingEpochLoop].train_dataloader_next"


class Clock(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.end = time.perf_counter()


def measure(recipe: str, steps: int, warmup: int, root: Path, extra: list[str]) -> dict[str, Any]:
    args = ["--config", str(recipes_dir() / "pretrain" / f"{recipe}.yaml")]
    args += [
        "--trainer.max_steps",
        str(steps),
        "--trainer.max_epochs",
        "-1",
        "--trainer.limit_val_batches",
        "0",
    ]
    profiler = {"class_path": "pytorch_lightning.profilers.SimpleProfiler"}
    profiler["init_args"] = {"dirpath": str(root / recipe), "filename": "profile"}  # the table to a file
    args += ["--trainer.profiler", json.dumps(profiler), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(root / recipe), *extra]
    cli = build_cli(args)
    clock = Clock()
    cli.trainer.callbacks.append(clock)
    fit_start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fetches = list(cli.trainer.profiler.recorded_durations[FETCH])
    # fetch k (the batch after k) runs just before batch k starts; count from batch `warmup` on
    waited = sum(fetches[warmup:])
    wall = clock.end - clock.starts[warmup] + fetches[warmup]
    return {
        "recipe": recipe,
        "batch_size": cli.datamodule.batch_size,
        "num_workers": cli.datamodule.num_workers,
        "cache": cli.datamodule.cache,
        "train_images": len(cli.datamodule.train_set),
        "steps": len(clock.starts),
        "warmup_steps": warmup,
        "seconds_to_first_batch": clock.starts[0] - fit_start,  # reading + caching every image, workers
        "fetch_seconds": fetches,
        "waited_seconds": waited,
        "wall_seconds": wall,
        "median_step_seconds": sorted(b - a for a, b in zip(clock.starts, clock.starts[1:], strict=False))[
            (len(clock.starts) - 1) // 2
        ],
        "fraction_waiting": waited / wall,
    }


def run(steps: int, warmup: int, extra: list[str]) -> dict[str, Any]:
    env = environment(threads=-1)
    result: dict[str, Any] = {"environment": env, "data_dir": str(data_dir()), "target_fraction": TARGET}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in RECIPES:
            result[recipe] = measure(recipe, steps, warmup, Path(tmp), extra)
    result["environment"]["load_average_after"] = list(os.getloadavg())
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Data pipeline: time the training loop waits for data",
        "",
        "`medssl pretrain` with the shipped recipes on the real data, caching on; Lightning's "
        "SimpleProfiler times every batch fetch; share of the training wall time after the warm-up steps. "
        f"{env['cpu']}, "
        f"torch {env['torch']}. {load_line(env, env['load_average_after'])}.",
        "",
        "| recipe | images | batch | workers | cache | s to 1st batch | steps timed | median step (s) "
        "| waited (s) | wall (s) | **waiting** |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe in RECIPES:
        r = result[recipe]
        lines.append(
            f"| `{recipe}` | {r['train_images']} | {r['batch_size']} | {r['num_workers']} "
            f"| {r['cache']} | {r['seconds_to_first_batch']:.1f} | {r['steps'] - r['warmup_steps']} "
            f"| {r['median_step_seconds']:.2f} | {r['waited_seconds']:.2f} | {r['wall_seconds']:.1f} "
            f"| **{100 * r['fraction_waiting']:.1f} %** |"
        )
    lines += ["", f"Target: <= {100 * result['target_fraction']:.0f} % of the wall time.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 steps on 16 images with a tiny network")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    extra: list[str] = []
    if args.quick:
        args.steps, args.warmup = 4, 1
        extra = ["--data.limit", "16", "--data.batch_size", "4", "--data.val_fraction", "0.25"]
        extra += ["--model.init_args.backbone", "resnet10"]
        extra += ["--model.init_args.backbone_kwargs", '{"small_input": true, "widen_factor": 0.125}']
    result = run(args.steps, args.warmup, extra)
    for recipe in RECIPES:
        fraction = result[recipe]["fraction_waiting"]
        print(f"{recipe}: waiting for data {100 * fraction:.1f} % of the wall time (target <= 5 %)")
    write_results("data_pipeline", result, markdown(result), *([args.out] if args.out else []))


if __name__ == "__main__":
    main()
