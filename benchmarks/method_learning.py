"""Do the MoCo, DINO and MAE recipes learn? Longer CPU runs of all nine on the real data, each judged against
the loss of a model that learned nothing.

Each run is ``medssl pretrain --config recipes/pretrain/<recipe>.yaml`` with a tiny backbone, a seeded data
subset and a few epochs (``RUNS``: the overrides of the real-data tests in ``tests/realdata/test_*_real.py``,
on more data or for more epochs); everything else (views, loss, schedules) is the recipe's. Reported: the
mean training loss of the first and the last epoch, and the reference:

- MoCo v3, and the in-batch InfoNCE that MoCo v2 logs (``train/loss_in_batch``): chance ``log B``, the loss
  of equal logits. v2's queue loss is listed with its chance ``log(1 + negatives)``; it first rises while
  real keys replace the random initial queue, and MoCHi's hard negatives keep it near chance.
- DINO: ``train/loss_constant_student``, the loss of the best student that ignores its input (it predicts
  the batch-mean teacher distribution). Both collapses (uniform or one-hot teacher) bring the loss to it.
- MAE: ``train/loss_flat_patches``, the loss of predicting every masked patch flat at its own mean.

Writes ``results/method_learning.json`` and ``.md``; reruns of single recipes update them in place.

    PYTHONPATH=$PWD nice python benchmarks/method_learning.py   # all nine, about 20 min on 2 idle cores
    PYTHONPATH=$PWD nice python benchmarks/method_learning.py --only mae_vit_tiny_hippocampus_3d
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from medssl.recipes_dir import recipes_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def data(limit: int, epochs: int, batch_size: int = 32) -> list[str]:
    return [
        *("--data.limit", str(limit), "--data.batch_size", str(batch_size), "--data.num_workers", "0"),
        *("--trainer.max_epochs", str(epochs), "--model.init_args.warmup_epochs", "1"),
    ]


def resnet10(kwargs: str) -> list[str]:
    return ["--model.init_args.backbone", "resnet10", "--model.init_args.backbone_kwargs", kwargs]


def vit(kwargs: str) -> list[str]:
    tiny = "hidden_size: 64, num_layers: 2, num_heads: 4, mlp_dim: 128"
    return ["--model.init_args.backbone_kwargs", f"{{{kwargs}, {tiny}}}"]


SMALL_STEM, STEM = "{small_input: true, widen_factor: 0.25}", "{widen_factor: 0.25}"
MOCO = ["--model.init_args.hidden_dim", "128", "--model.init_args.lr", "3e-3"]
QUEUE = ["--model.init_args.queue_size", "256"]
MOCHI = [
    *("--model.init_args.mochi_top_k", "64", "--model.init_args.mochi_mix", "64"),
    *("--model.init_args.mochi_query_mix", "16"),
]
DINO = ["--model.init_args.hidden_dim", "128", "--model.init_args.lr", "3e-3"]
LOCAL_2, GLOBALS_ONLY = ["--model.init_args.num_local", "2"], ["--model.init_args.num_local", "0"]
MAE = [
    "--model.init_args.decoder_dim",
    "64",
    "--model.init_args.decoder_depth",
    "1",
    "--model.init_args.lr",
    "2e-3",
]
HIPPO_VIT = "img_size: [32, 48, 32], patch_size: [8, 8, 8]"

#: recipe -> overrides: the tests' ones, for about 3x their optimiser steps
RUNS: dict[str, list[str]] = {
    "moco_resnet18_pneumoniamnist_2d": [*resnet10(SMALL_STEM), *MOCO, *QUEUE, *data(1024, 8)],
    "moco_resnet18_adrenalmnist3d_3d": [*resnet10(STEM), *MOCO, *QUEUE, *MOCHI, *data(1024, 8)],
    "moco_resnet18_hippocampus_3d": [*resnet10(STEM), *MOCO, *data(260, 16, batch_size=16)],
    "dino_resnet18_pneumoniamnist_2d": [*resnet10(SMALL_STEM), *DINO, *LOCAL_2, *data(1024, 8)],
    "dino_resnet18_adrenalmnist3d_3d": [*resnet10(STEM), *DINO, *GLOBALS_ONLY, *data(1024, 8)],
    "dino_resnet18_hippocampus_3d": [*resnet10(STEM), *DINO, *GLOBALS_ONLY, *data(260, 16, batch_size=16)],
    "mae_vit_tiny_pneumoniamnist_2d": [*vit("img_size: 28, patch_size: 4"), *MAE, *data(1024, 8)],
    "mae_vit_tiny_adrenalmnist3d_3d": [*vit("img_size: 28, patch_size: 4"), *MAE, *data(1300, 8)],
    "mae_vit_tiny_hippocampus_3d": [*vit(HIPPO_VIT), *MAE, *data(260, 16, batch_size=16)],
}


def epoch_means(rows: list[dict[str, str]], key: str) -> list[float]:
    """Per-epoch means of the logged training term ``key`` (e.g. ``train/loss_in_batch``)."""
    return [float(row[f"{key}_epoch"]) for row in rows if row.get(f"{key}_epoch")]


def pretrain(recipe: str, overrides: list[str], run_dir: Path) -> tuple[list[dict[str, str]], dict, float]:
    """``medssl pretrain`` in a subprocess: the rows of metrics.csv, the resolved config, the wall time."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    config = recipes_dir() / "pretrain" / f"{recipe}.yaml"
    args = [sys.executable, "-m", "medssl.cli", "pretrain", "--config", str(config)]
    args += ["--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false", *overrides]
    start = time.perf_counter()
    subprocess.run(args, env={**os.environ, "PYTHONPATH": path}, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return list(csv.DictReader((run_dir / "metrics.csv").open())), resolved, seconds


def summarise(recipe: str, rows: list[dict[str, str]], config: dict) -> dict:
    """First / last epoch loss, the reference it is judged by, and the method's extra curves."""
    init, batch_size = config["model"]["init_args"], config["data"]["batch_size"]
    loss = epoch_means(rows, "train/loss")
    out: dict = {
        "recipe": recipe,
        "epochs": len(loss),
        "loss": loss,
        "val_loss": epoch_means(rows, "val/loss"),
    }
    method = recipe.split("_")[0]
    if method == "moco" and init.get("version") == "v3":
        out.update(measure="InfoNCE (v3)", curve=loss, reference=math.log(batch_size), reference_name="log B")
    elif method == "moco":
        negatives = init["queue_size"] + (init["mochi_mix"] + init["mochi_query_mix"] if init["mochi"] else 0)
        out.update(measure="in-batch InfoNCE (v2)", curve=epoch_means(rows, "train/loss_in_batch"))
        out.update(reference=math.log(batch_size), reference_name="log B")
        out.update(queue_loss_chance=math.log(1 + negatives))
    elif method == "dino":
        constant = epoch_means(rows, "train/loss_constant_student")
        out.update(measure="DINO loss", curve=loss, reference=constant[-1], reference_name="constant student")
        out.update(constant_student=constant, teacher_entropy=epoch_means(rows, "train/loss_teacher_entropy"))
        out.update(log_k=math.log(init["output_dim"]))
    else:
        flat = epoch_means(rows, "train/loss_flat_patches")
        out.update(measure="masked-patch MSE", curve=loss, reference=flat[-1], reference_name="flat patches")
    out.update(start=out["curve"][0], end=out["curve"][-1])
    out["below_reference"] = out["reference"] - out["end"]
    return out


def markdown(results: list[dict], header: str) -> str:
    lines = [
        "# Do the MoCo / DINO / MAE recipes learn? Training loss against a no-learning reference",
        "",
        header,
        "",
        "| recipe | measure | epochs | start | end | reference (no learning) | end below it | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reference = f"{r['reference']:.3f} ({r['reference_name']})"
        lines.append(
            f"| {r['recipe']} | {r['measure']} | {r['epochs']} | {r['start']:.3f} | {r['end']:.3f} "
            f"| {reference} | {r['below_reference']:.3f} | {r['seconds']:.0f} |"
        )
    lines += ["", "More curves (first -> last epoch):", ""]
    for r in results:
        first_last = f"{r['loss'][0]:.3f} -> {r['loss'][-1]:.3f}"
        if "queue_loss_chance" in r:
            chance = r["queue_loss_chance"]
            lines.append(
                f"- {r['recipe']}: queue loss {first_last} (chance log(1 + negatives) = {chance:.3f})"
            )
        if "teacher_entropy" in r:
            entropy, constant = r["teacher_entropy"], r["constant_student"]
            lines.append(
                f"- {r['recipe']}: teacher entropy {entropy[0]:.3f} -> {entropy[-1]:.3f}, constant student "
                f"{constant[0]:.3f} -> {constant[-1]:.3f}, log K = {r['log_k']:.3f}"
            )
        if r["val_loss"]:
            lines.append(f"- {r['recipe']}: val loss {r['val_loss'][0]:.3f} -> {r['val_loss'][-1]:.3f}")
    return "\n".join(lines) + "\n"


def write(out: Path, done: dict[str, dict]) -> None:
    """``out.json`` and ``out.md`` from the finished runs, in ``RUNS`` order."""
    threads = os.environ["OMP_NUM_THREADS"]
    header = (
        "`python benchmarks/method_learning.py`: every recipe through `medssl pretrain` with its overrides "
        f"in `RUNS` (tiny ResNet-10 or ViT, seeded subset), {threads} threads, torch {torch.__version__} "
        "on a shared 2-core machine (wall times are not comparable). start / end: mean training value of the "
        "measure over the first / last epoch; the reference is the last epoch's."
    )
    results = [done[recipe] for recipe in RUNS if recipe in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"header": header, "runs": results}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, header))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="run only these recipes")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "method_learning")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    out_json = args.out.with_suffix(".json")
    done = {r["recipe"]: r for r in json.loads(out_json.read_text())["runs"]} if out_json.is_file() else {}
    with tempfile.TemporaryDirectory() as work:
        for recipe in args.only or list(RUNS):
            rows, config, seconds = pretrain(recipe, RUNS[recipe], Path(work) / recipe)
            done[recipe] = {**summarise(recipe, rows, config), "seconds": seconds, "overrides": RUNS[recipe]}
            write(args.out, done)  # after every run: a long benchmark can be stopped and resumed with --only
            r = done[recipe]
            print(f"{recipe}: {r['start']:.3f} -> {r['end']:.3f} (no learning: {r['reference']:.3f})")
    print(f"wrote {out_json} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
