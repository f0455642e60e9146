"""Does JCL pretraining help MSD Hippocampus segmentation with ~10 % of the labels? JCL vs scratch.

1. The fine-tuning data module's fixed 20 % patient hold-out (test) is taken out first: JCL pretrains only
   on the other cases' images (no label, no test image is seen before testing).
2. ``medssl pretrain`` (recipes/pretrain/jcl_basicunet_hippocampus_3d.yaml) for a fixed wall-time budget.
3. ``medssl finetune`` (recipes/finetune/seg_unet_hippocampus_3d.yaml) with ``--data.label_fraction`` of the
   training cases, from the JCL weights and from scratch, for the same number of steps, for each seed.
4. ``results/jcl_hippocampus.json`` and ``.md``: test Dice / HD95 per run and mean +- std over seeds.

Every finished run is kept under ``--work`` and reused, so the benchmark can be run in pieces.

    python benchmarks/jcl_hippocampus.py --pretrain-minutes 12 --finetune-steps 150 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from medssl.cli import main as medssl
from medssl.data.paths import data_dir
from medssl.finetune.seg_data import SegmentationDataModule
from medssl.recipes_dir import recipes_dir

HERE = Path(__file__).resolve().parent
PRETRAIN = recipes_dir() / "pretrain" / "jcl_basicunet_hippocampus_3d.yaml"
FINETUNE = recipes_dir() / "finetune" / "seg_unet_hippocampus_3d.yaml"


def pretraining_images(work: Path) -> Path:
    """A CSV of the images outside the fine-tuning test hold-out."""
    out = work / "pretrain_images.csv"
    if out.is_file():
        return out
    source = data_dir() / "msd_hippocampus"
    splits = SegmentationDataModule(
        source=str(source), spatial_dims=3, num_classes=3, patch_size=[32, 48, 32]
    ).items()
    work.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image"])
        for split in ("train", "val"):
            writer.writerows([item["image"]] for item in splits[split])
    kept = sum(len(splits[s]) for s in ("train", "val"))
    print(f"pretraining on {kept} images; {len(splits['test'])} held out for testing")
    return out


def pretrain(work: Path, minutes: float) -> Path:
    run = work / "jcl_pretrain"
    if not (run / "weights" / "backbone.safetensors").is_file():
        budget = f"00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}"
        check(
            medssl(
                [
                    "pretrain",
                    "--config",
                    str(PRETRAIN),
                    "--data.source",
                    str(pretraining_images(work)),
                    "--trainer.default_root_dir",
                    str(run),
                    "--trainer.max_time",
                    budget,
                    "--trainer.max_epochs",
                    "1000",
                    "--trainer.enable_progress_bar",
                    "false",
                ]
            )
        )
    return run


def finetune(work: Path, name: str, pretrained: str, seed: int, fraction: float, steps: int) -> dict:
    run = work / f"{name}_frac{fraction}_seed{seed}"
    metrics = run / "test_metrics.json"
    if not metrics.is_file():
        check(
            medssl(
                [
                    "finetune",
                    "--config",
                    str(FINETUNE),
                    "--model.pretrained",
                    pretrained,
                    "--seed_everything",
                    str(seed),
                    "--data.seed",
                    str(seed),
                    "--data.label_fraction",
                    str(fraction),
                    "--trainer.max_steps",
                    str(steps),
                    "--trainer.max_epochs",
                    "-1",
                    "--trainer.check_val_every_n_epoch",
                    "5",
                    "--trainer.default_root_dir",
                    str(run),
                    "--trainer.enable_progress_bar",
                    "false",
                ]
            )
        )
    return json.loads(metrics.read_text())["metrics"]


def check(code: int) -> None:
    if code != 0:
        sys.exit(f"a medssl run failed (exit {code})")


def summarise(results: dict[str, list[dict]], config: dict) -> str:
    lines = [
        "| init | test Dice (mean +- std) | per seed | test HD95 (mean) |",
        "|---|---|---|---|",
    ]
    for name, runs in results.items():
        dice = [r["test/dice"] for r in runs]
        hd95 = [r["test/hd95"] for r in runs]
        spread = statistics.stdev(dice) if len(dice) > 1 else 0.0
        lines.append(
            f"| {name} | {statistics.mean(dice):.3f} +- {spread:.3f} | "
            f"{', '.join(f'{d:.3f}' for d in dice)} | {statistics.mean(hd95):.2f} |"
        )
    head = (
        f"JCL-pretrained vs scratch BasicUNet on MSD Hippocampus, {config['fraction']:.0%} of the training "
        f"cases labelled, {config['finetune_steps']} fine-tuning steps, seeds {config['seeds']}, JCL "
        f"pretraining {config['pretrain_minutes']} min on 2 CPU cores. Test: fixed 20 % patient hold-out."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_jcl_hippocampus"))
    parser.add_argument("--pretrain-minutes", type=float, default=12.0)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    jcl = pretrain(args.work, args.pretrain_minutes)
    results = {
        init: [finetune(args.work, init, source, s, args.fraction, args.finetune_steps) for s in args.seeds]
        for init, source in (("jcl", str(jcl)), ("scratch", "none"))
    }
    config = {
        "fraction": args.fraction,
        "finetune_steps": args.finetune_steps,
        "seeds": args.seeds,
        "pretrain_minutes": args.pretrain_minutes,
    }
    out = HERE / "results" / "jcl_hippocampus"
    out.with_suffix(".json").write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    table = summarise(results, config)
    out.with_suffix(".md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    run()
