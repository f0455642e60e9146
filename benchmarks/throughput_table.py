"""Training throughput and peak memory of every method x backbone x 2D/3D recipe on this machine.

For each shipped recipe (``recipes/pretrain/<method>_<backbone>_<dataset>_<2d|3d>.yaml``, PneumoniaMNIST
and DRIVE in 2D, Hippocampus in 3D), in a fresh process per recipe and precision: the recipe's model as
``medssl pretrain`` builds it, one batch of the recipe's ``batch_size`` real images (``$MEDSSL_DATA_DIR``)
through the recipe's preprocessing and views, then ``--steps`` training steps through the Lightning Trainer
on that batch after a warm-up step (data loading is benchmarked by ``data_pipeline.py``, not here).
Throughput = images per second (median step); peak memory = the process's peak resident memory (``VmHWM``)
and what training added to the RSS of the idle runtime (torch, MONAI, Lightning imported, model built).

    python benchmarks/throughput_table.py                       # ~15 min on 2 quiet cores
    python benchmarks/throughput_table.py --quick               # smoke test: 2 recipes, batch 2
    python benchmarks/throughput_table.py --recipes simclr_resnet18_pneumoniamnist_2d --precisions 32-true
    python benchmarks/throughput_table.py --recipes jcl_basicunet_hippocampus_3d --update  # one row
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_utils import (
    RESULTS,
    StepTimer,
    environment,
    load_line,
    quiet_trainer,
    repeat_loader,
    rss_mib,
    step_times,
    write_results,
)
from monai.transforms import Compose
from torch.utils.data import default_collate

RECIPES = (
    "simclr_resnet18_pneumoniamnist_2d",
    "moco_resnet18_pneumoniamnist_2d",
    "dino_resnet18_pneumoniamnist_2d",
    "mae_vit_tiny_pneumoniamnist_2d",
    "jcl_basicunet_drive_2d",
    "simclr_resnet18_hippocampus_3d",
    "moco_resnet18_hippocampus_3d",
    "dino_resnet18_hippocampus_3d",
    "mae_vit_tiny_hippocampus_3d",
    "jcl_basicunet_hippocampus_3d",
)
PRECISIONS = ("32-true", "bf16-mixed")


def child(recipe: str, precision: str, steps: int, overrides: list[str]) -> dict[str, Any]:
    from medssl.commands.pretrain import build_cli
    from medssl.recipes_dir import recipes_dir

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "--config",
            str(recipes_dir() / "pretrain" / f"{recipe}.yaml"),
            "--trainer.default_root_dir",
            tmp,
        ]
        cli = build_cli([*args, *overrides])
        method, data = cli.model, cli.datamodule
        train, _ = data.items()
        transform = Compose([*data.preprocess().transforms, method.view_transform()])
        batch = default_collate([transform(dict(item)) for item in train[: data.batch_size]])
        idle = rss_mib()
        timer = StepTimer()
        trainer = quiet_trainer(
            Path(tmp), max_steps=steps + 2, precision=precision, callbacks=[timer], **_trainer_options(cli)
        )
        trainer.fit(method, repeat_loader(batch, steps + 2))
        times = step_times(timer.starts, skip=1)  # the first step allocates optimiser state
    median = statistics.median(times)
    size = batch[next(iter(batch))].shape
    return {
        "recipe": recipe,
        "precision": precision,
        "method": type(method).__name__,
        "backbone": method.hparams["backbone"],
        "spatial_dims": method.spatial_dims,
        "batch_size": data.batch_size,
        "view": list(size[1:]),
        "parameters": sum(p.numel() for p in method.parameters()),
        "step_seconds": times,
        "median_step_seconds": median,
        "images_per_second": data.batch_size / median,
        "idle_rss_mib": idle,
        "peak_rss_mib": rss_mib("VmHWM"),
    }


def _trainer_options(cli: Any) -> dict[str, Any]:
    """The recipe's per-step trainer settings that change the compute (gradient clipping)."""
    clip = getattr(cli.trainer, "gradient_clip_val", None)
    return {"gradient_clip_val": clip} if clip else {}


def measure(recipe: str, precision: str, steps: int, threads: int, overrides: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            __file__,
            "--child",
            str(out),
            "--recipes",
            recipe,
            "--precisions",
            precision,
        ]
        command += ["--steps", str(steps), "--threads", str(threads), "--overrides", json.dumps(overrides)]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Training throughput and peak memory per recipe",
        "",
        "One batch of real images through each shipped recipe's preprocessing and views, then training "
        f"steps through the Lightning Trainer (median of {result['steps']} after a warm-up step), a fresh "
        f"process per cell, {env['threads']} threads. Peak RSS includes the ~1 GiB Python/torch/MONAI/"
        "Lightning runtime; '+ training' is the peak minus the RSS with the model built, before training. "
        f"{env['cpu']}, torch {env['torch']}. {load_line(env, env['load_average_after'])}.",
        "",
        f"Regenerate: `{result['command']}`",
        "",
        "| method | backbone | dims | view | batch | params (M) "
        + "".join(f"| {p} img/s | {p} peak RSS (MiB) | {p} + training (MiB) " for p in result["precisions"])
        + "|",
        "|---|---|---|---|---|---" + "|---|---|---" * len(result["precisions"]) + "|",
    ]
    for recipe in result["recipes"]:
        cells = result["cells"][recipe]
        first = cells[result["precisions"][0]]
        view = "x".join(map(str, first["view"][1:]))
        row = f"| {first['method']} | {first['backbone']} | {first['spatial_dims']}D | {view} "
        row += f"| {first['batch_size']} | {first['parameters'] / 1e6:.1f} "
        for p in result["precisions"]:
            c = cells[p]
            added = c["peak_rss_mib"] - c["idle_rss_mib"]
            row += f"| {c['images_per_second']:.1f} | {c['peak_rss_mib']:.0f} | {added:.0f} "
        lines.append(row + "|")
    for recipe, later in result.get("remeasured", {}).items():
        load = load_line(later["environment"])
        lines += ["", f"`{recipe}` remeasured later: `{later['command']}`; {load}."]
    return "\n".join([*lines, ""])


def earlier_table(out: Path, precisions: list[str], steps: int) -> dict[str, Any]:
    """The table ``--update`` adds rows to, refused before any measuring if the rows would not compare."""
    path = out / "throughput_table.json"
    if not path.is_file():
        raise SystemExit(f"--update: no table at {path} to update: run without --update first")
    earlier = json.loads(path.read_text())
    _refuse_other_settings(earlier, precisions, steps)
    return earlier


def _refuse_other_settings(earlier: dict[str, Any], precisions: list[str], steps: int) -> None:
    if earlier["precisions"] != precisions or earlier["steps"] != steps:
        raise SystemExit(
            f"--update: the table was measured with --precisions {' '.join(earlier['precisions'])} "
            f"--steps {earlier['steps']}; measure with the same"
        )


def update_rows(earlier: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` with the rows of ``result`` replaced or added; each row keeps its own measuring load."""
    _refuse_other_settings(earlier, result["precisions"], result["steps"])
    merged = earlier | {"cells": earlier["cells"] | result["cells"]}
    merged["recipes"] = list(dict.fromkeys([*earlier["recipes"], *result["recipes"]]))
    later = {"environment": result["environment"], "command": result["command"]}
    merged["remeasured"] = earlier.get("remeasured", {}) | {recipe: later for recipe in result["recipes"]}
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 recipes, batch 2, 1 step: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--update", action="store_true", help="replace only these recipes' rows in the table")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides: list[str] = json.loads(args.overrides)
    if args.child:
        args.child.write_text(json.dumps(child(args.recipes[0], args.precisions[0], args.steps, overrides)))
        return
    command = "python benchmarks/throughput_table.py " + " ".join(sys.argv[1:])
    if args.quick:
        args.recipes = ["simclr_resnet18_pneumoniamnist_2d", "mae_vit_tiny_hippocampus_3d"]
        args.precisions, args.steps = ["32-true"], 1
        overrides = ["--data.batch_size", "2", "--data.limit", "8"]
    if args.update and args.quick:
        parser.error("--update adds real measurements to the table: not with --quick")
    out = args.out or RESULTS
    earlier = earlier_table(out, args.precisions, args.steps) if args.update else None
    result: dict[str, Any] = {"environment": environment(args.threads), "command": command.strip()}
    result |= {"recipes": args.recipes, "precisions": args.precisions, "steps": args.steps, "cells": {}}
    for recipe in args.recipes:
        result["cells"][recipe] = {}
        for precision in args.precisions:
            cell = measure(recipe, precision, args.steps, args.threads, overrides)
            result["cells"][recipe][precision] = cell
            speed, peak = cell["images_per_second"], cell["peak_rss_mib"]
            print(f"{recipe} {precision}: {speed:.1f} img/s, peak {peak:.0f} MiB")
    result["environment"]["load_average_after"] = list(os.getloadavg())
    if earlier is not None:
        result = update_rows(earlier, result)
    write_results("throughput_table", result, markdown(result), out)


if __name__ == "__main__":
    main()
