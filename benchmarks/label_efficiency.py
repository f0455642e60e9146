"""Does pretraining help with few labels? Every method vs scratch on real data, at 1 / 10 / 100 % labels.

For one dataset of ``../shared/data`` (``MEDSSL_DATA_DIR``) and a list of methods:

1. ``medssl pretrain`` each method's recipe (``recipes/pretrain/<method>_<backbone>_<dataset>_<2d|3d>.yaml``)
   on the training images without their labels, for a fixed number of optimiser steps per method and dataset
   (``Dataset.pretrain_steps``, calibrated to about 15-20 CPU minutes here, or ``--pretrain-steps``; the wall
   time is recorded). Test images are never used:
   MedMNIST's test split is left out by the DataModule, Hippocampus pretrains on the cases outside the
   fine-tuning's fixed patient hold-out, DRIVE on its training folder.
2. ``medssl compare`` per fine-tuning recipe (one per backbone family, shared by the methods that pretrain
   that backbone): fine-tune (and, for classification, the frozen-feature linear probe + kNN of ``medssl
   evaluate``; for segmentation, the decoder trained on the frozen encoder) from each method's weights and
   from scratch, at each label fraction x seed, for a fixed number of steps whatever the fraction.
3. ``results/label_efficiency_<dataset>.json`` (every trial, pretraining steps and minutes), ``.md`` (tables)
   and ``.png`` (metric vs label fraction): ``label_efficiency_report.py``.

Every finished run is kept under ``--work`` and reused (a stopped trial resumes from its checkpoint): the
benchmark can be run in pieces and resumed.
The report accumulates the pieces too; ``--reuse-scratch`` adds a method to it without running the scratch
trials again (they must be in the report, with the same fine-tuning budget). A method pretrained again (in a
new work folder) replaces its trials in the report, unless its weights equal the report's bit for bit
(``weights_sha256``; a seeded recipe reproduces on the same kind of CPU with the same thread count, both
recorded as ``cpu`` and ``threads``): then its earlier trials stay, and only new fractions or modes need
running.

    python benchmarks/label_efficiency.py --dataset pneumoniamnist --methods simclr moco dino mae
    python benchmarks/label_efficiency.py --dataset pneumoniamnist --methods dino --reuse-scratch
    python benchmarks/label_efficiency.py --dataset hippocampus --methods jcl --fractions 0.01 0.1
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from label_efficiency_report import (
    SecondReading,
    asked,
    report_path,
    same_backbone_options,
    same_finetuning,
    write_report,
)

from medssl.cli import main as medssl
from medssl.data.paths import data_dir
from medssl.export import open_pretrained
from medssl.export.source import safe_torch_load
from medssl.recipes_dir import recipes_dir


@dataclass(frozen=True)
class Dataset:
    """How one dataset is benchmarked."""

    name: str  # recipe suffix, e.g. "pneumoniamnist_2d"
    backbones: dict[str, str]  # method -> backbone part of its recipe names
    finetune: dict[str, str]  # backbone -> fine-tuning recipe
    #: method -> pretraining steps, calibrated to about 15-20 minutes of this machine's 2 CPU cores (measured
    #: minutes are in the report; PneumoniaMNIST's SimCLR, the reference method, gets about 35): the budget,
    #: given as steps so the LR schedule knows its length and a rerun repeats it
    pretrain_steps: dict[str, int]
    finetune_steps: int
    val_every: int  # fine-tuning validation (model selection) every this many steps
    modes: tuple[str, ...] = ("finetune", "frozen")
    #: backbone -> its ``backbone_kwargs`` here, in pretraining and fine-tuning alike (the shipped recipes'
    #: own when absent): what a CPU budget affords, recorded in the results
    cpu_backbones: dict[str, str] = field(default_factory=dict)
    #: method -> more ``medssl pretrain`` options for this short budget (recorded in the results)
    pretrain_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    second_reading: SecondReading | None = None


CNN = {
    "simclr": "resnet18",
    "moco": "resnet18",
    "dino": "resnet18",
    "mae": "vit_tiny",
    "jcl": "basicunet",
    "mim": "basicunet",
}
#: segmentation: every CNN method pretrains (the encoder of) the fine-tuned U-Net: one scratch baseline
SEG = CNN | {"simclr": "basicunet", "moco": "basicunet", "dino": "basicunet"}
DATASETS = {
    "pneumoniamnist": Dataset(
        name="pneumoniamnist_2d",
        backbones=CNN,
        finetune={"resnet18": "cls_resnet18_pneumoniamnist_2d", "vit_tiny": "cls_vit_tiny_pneumoniamnist_2d"},
        pretrain_steps={"simclr": 500, "mae": 600, "moco": 200, "dino": 400},
        finetune_steps=100,
        val_every=25,
        cpu_backbones={"resnet18": "{small_input: true, widen_factor: 0.5}"},
        # DINO's multi-crop step is 3x SimCLR's: at the recipe's batch 128 the budget is 80 steps, too few for
        # its EMA teacher (the loss stayed above the constant student's); batch 32 gives 4x the steps
        pretrain_args={"dino": ("--data.batch_size", "32", "--model.init_args.warmup_epochs", "0.25")},
    ),
    "adrenalmnist3d": Dataset(
        name="adrenalmnist3d_3d",
        backbones=CNN,
        finetune={"resnet18": "cls_resnet18_adrenalmnist3d_3d", "vit_tiny": "cls_vit_tiny_adrenalmnist3d_3d"},
        # MAE: about 0.28 s per step with 4^3 patches of 7^3 voxels (patch 4's 343 tokens cost 4x more)
        pretrain_steps={"simclr": 400, "moco": 800, "dino": 500, "mae": 3000},
        finetune_steps=100,
        val_every=25,
        cpu_backbones={
            "resnet18": "{small_input: false, widen_factor: 0.5}",
            "vit_tiny": "{img_size: 28, patch_size: 7}",
        },
    ),
    "hippocampus": Dataset(
        name="hippocampus_3d",
        backbones=SEG,
        finetune={
            "resnet18": "seg_resnet18_hippocampus_3d",
            "vit_tiny": "seg_vit_tiny_hippocampus_3d",
            "basicunet": "seg_unet_hippocampus_3d",
        },
        # 64 x 96 x 64 views, 35 min in float32: level with scratch (README; the earlier 32 x 64 x 32 views,
        # 2000 steps / 31 min, were level too, 1000 steps 0.006 below)
        # MAE: about 0.27 s per step (96 tokens of 8^3 voxels); fine-tuned against a scratch ViT-Tiny + UNETR
        pretrain_steps={"jcl": 450, "mim": 1500, "simclr": 600, "moco": 500, "dino": 400, "mae": 3000},
        finetune_steps=600,
        val_every=100,
        modes=("finetune", "frozen_encoder"),
    ),
    "drive": Dataset(
        name="drive_2d",
        backbones=SEG,
        finetune={
            "resnet18": "seg_resnet18_drive_2d",
            "vit_tiny": "seg_vit_tiny_drive_2d",
            "basicunet": "seg_unet_drive_2d",
        },
        # 13-27 min each here (the report lists the measured minutes; SimCLR and DINO take the longest);
        # MAE (144 tokens of 8^2 pixels): 29 min measured on one core beside another job, fine-tuned against a
        # scratch ViT-Tiny + UNETR
        pretrain_steps={"jcl": 4000, "mim": 3000, "simclr": 1500, "moco": 1200, "dino": 800, "mae": 2200},
        finetune_steps=600,
        val_every=100,
        modes=("finetune", "frozen_encoder"),
        second_reading=SecondReading("DRIVE/test/1st_manual", "DRIVE/test/2nd_manual", "DRIVE/test/mask"),
    ),
}


def pretrain(dataset: Dataset, method: str, work: Path, steps: int) -> tuple[Path, dict]:
    """Pretrain (or reuse) one method; its run folder and its record: budget, minutes, weights and
    ``repeat_conditions``."""
    recipe = recipes_dir() / "pretrain" / f"{method}_{dataset.backbones[method]}_{dataset.name}.yaml"
    if not recipe.is_file():
        sys.exit(f"no pretraining recipe {recipe.name} for {method} on {dataset.name}")
    run = work / "pretrain" / method
    stats = run / "benchmark.json"
    extra = list(dataset.pretrain_args.get(method, ()))
    budget = pretraining_budget(dataset, method, steps)
    if not stats.is_file():
        for stale in (work / "compare").glob(f"*/{method}"):  # trials of an earlier pretraining run
            shutil.rmtree(stale)
        source = _pretraining_source(dataset, work)
        resumed_at = stopped_pretraining_step(run, budget)
        run.mkdir(parents=True, exist_ok=True)
        (run / "planned.json").write_text(json.dumps(budget) + "\n")  # what a stopped run may resume for
        started = time.monotonic()
        _check(
            medssl(
                [
                    "pretrain",
                    "--config", str(recipe),
                    *(["--data.source", str(source)] if source else []),
                    "--trainer.default_root_dir", str(run),
                    "--trainer.max_steps", str(steps),
                    "--trainer.max_epochs", "-1",
                    "--trainer.enable_progress_bar", "false",
                    "--ckpt_path", "auto",  # a stopped run goes on exactly (tests/reliability/test_resume.py)
                    *_backbone_args(dataset, dataset.backbones[method], "--model.init_args.backbone_kwargs"),
                    *extra,
                ]
            )
        )  # fmt: skip
        minutes = (time.monotonic() - started) / 60 * steps / (steps - resumed_at)
        measured = {"minutes": round(minutes, 1), "weights_sha256": weights_sha256(run)} | repeat_conditions()
        measured |= {"resumed_at_step": resumed_at} if resumed_at else {}  # minutes: scaled from the rest
        stats.write_text(json.dumps(budget | measured) + "\n")
    return run, json.loads(stats.read_text())


def stopped_pretraining_step(run: Path, budget: dict) -> int:
    """The step a stopped pretraining run in ``run`` resumes from (0: none); refused for another budget.

    The budget is ``pretraining_budget``'s: steps and extra options, as ``pretrain`` planned the run.
    """
    refusal = stopped_run_of_another_budget(run, budget)
    if refusal:
        sys.exit(refusal)
    last = run / "checkpoints" / "last.ckpt"
    return int(safe_torch_load(last)["global_step"]) if last.is_file() else 0


def stopped_run_of_another_budget(run: Path, budget: dict) -> str | None:
    """Why the stopped pretraining run in ``run`` may not resume for ``budget``, if it may not."""
    if not (run / "checkpoints" / "last.ckpt").is_file():
        return None
    planned = run / "planned.json"
    earlier = json.loads(planned.read_text()) if planned.is_file() else "an unknown budget"
    if earlier == budget:
        return None
    return f"{run} holds a stopped pretraining run for {earlier}, not {budget}: delete it"


def weights_sha256(run: Path) -> str:
    """sha256 of the tensors fine-tuning takes from a pretraining run: names, dtypes, shapes and values."""
    encoder, decoder, _ = open_pretrained(run).split_state()
    digest = hashlib.sha256()
    for name, tensor in sorted((encoder | decoder).items()):
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def repeat_conditions() -> dict:
    """What a seeded run needs, beside its recipe, to give the same weights again: the CPU kernels torch
    picks (``AVX2``, ``AVX512``) and the thread count (measured on Hippocampus MoCo v3: 1 and 2 threads
    differ, a run stopped and resumed does not)."""
    return {"cpu": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def pretraining_budget(dataset: Dataset, method: str, steps: int | None) -> dict:
    """What a pretraining run is reused for: steps and extra options (``asked`` of its ``benchmark.json``)."""
    extra = dataset.pretrain_args.get(method, ())
    return {"steps": steps} | ({"args": shlex.join(extra)} if extra else {})


def stale_pretraining(dataset: Dataset, budgets: dict[str, int | None], work: Path) -> str | None:
    """Why a pretraining folder under ``work`` cannot be reused or resumed for this budget, if one cannot."""
    for method, steps in budgets.items():
        stats = work / "pretrain" / method / "benchmark.json"
        budget = pretraining_budget(dataset, method, steps)
        if not stats.is_file():
            refusal = stopped_run_of_another_budget(stats.parent, budget)
            if refusal:
                return refusal
        else:
            earlier = json.loads(stats.read_text())
            if asked(earlier) != budget:
                why = f"was pretrained with {earlier}, not {budget}: delete it or use another --work"
                return f"{stats.parent} {why}"
    return None


def compare(dataset: Dataset, backbone: str, runs: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    """``medssl compare`` of the methods pretraining ``backbone`` against scratch; the trial records."""
    out = args.work / "compare" / dataset.finetune[backbone]
    recipe = recipes_dir() / "finetune" / f"{dataset.finetune[backbone]}.yaml"
    modes = [m for m in dataset.modes if m in args.modes]
    _check(
        medssl(
            [
                "compare",
                "--config", str(recipe),
                "--pretrained", *(f"{method}={run}" for method, run in runs.items()),
                "--label-fractions", *map(str, args.fractions),
                "--seeds", *map(str, args.seeds),
                "--modes", *modes,
                "--out", str(out),
                *(["--no-scratch"] if args.reuse_scratch else []),
                "--trainer.max_steps", str(args.finetune_steps or dataset.finetune_steps),
                "--trainer.max_epochs", "-1",
                "--trainer.check_val_every_n_epoch", "null",
                "--trainer.val_check_interval", str(dataset.val_every),
                "--trainer.enable_progress_bar", "false",
                *_backbone_args(dataset, backbone, "--model.backbone_kwargs"),
                *shlex.split(args.finetune_args),
            ]
        )
    )  # fmt: skip
    trials = json.loads((out / "compare.json").read_text())["trials"]
    for trial in trials:  # scratch is per backbone family: tables and plots are too
        trial["backbone"] = backbone
    return trials


def _pretraining_source(dataset: Dataset, work: Path) -> Path | None:
    """Hippocampus: a CSV of the cases outside the fine-tuning test hold-out; others: the recipe's own."""
    if dataset.name != "hippocampus_3d":
        return None
    out = work / "pretrain_images.csv"
    if not out.is_file():
        from medssl.finetune.seg_data import SegmentationDataModule

        splits = SegmentationDataModule(
            source=str(data_dir() / "msd_hippocampus"), spatial_dims=3, num_classes=3, patch_size=[32, 48, 32]
        ).items()
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image"])
            writer.writerows([item["image"]] for split in ("train", "val") for item in splits[split])
    return out


def _backbone_args(dataset: Dataset, backbone: str, option: str) -> list[str]:
    return [option, dataset.cpu_backbones[backbone]] if backbone in dataset.cpu_backbones else []


def _check(code: int) -> None:
    if code != 0:
        sys.exit(f"a medssl run failed (exit {code})")


def missing_scratch(dataset: Dataset, methods: list[str], args: argparse.Namespace) -> list[str]:
    """The scratch trials ``--reuse-scratch`` needs that the earlier report does not hold (same budget)."""
    path = report_path(dataset).with_suffix(".json")
    earlier = json.loads(path.read_text()) if path.is_file() else {"trials": []}
    steps = args.finetune_steps or dataset.finetune_steps
    budget = {
        "dataset": dataset.name,
        "finetune_steps": steps,
        "finetune_args": args.finetune_args,
        "cpu_backbones": dataset.cpu_backbones,
    }
    held = set()
    if same_finetuning(earlier, budget):
        held = {
            (t["backbone"], t["mode"], t["label_fraction"], t["seed"])
            for t in earlier["trials"]
            if t["init"] == "scratch" and same_backbone_options(earlier, budget, t["backbone"])
        }
    wanted = [
        (backbone, mode, fraction, seed)
        for backbone in dict.fromkeys(dataset.backbones[m] for m in methods)
        for mode in dataset.modes
        if mode in args.modes
        for fraction in args.fractions
        for seed in args.seeds
    ]
    return [f"{b} {m} {f:g} seed {s}" for b, m, f, s in wanted if (b, m, f, s) not in held]


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco", "dino", "mae"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["finetune", "frozen", "frozen_encoder"],
        help="each dataset runs those it takes: finetune, frozen (classification), frozen_encoder (seg.)",
    )
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="default: the dataset's calibrated budget per method"
    )
    parser.add_argument("--finetune-steps", type=int, default=None, help="default: the dataset's own")
    parser.add_argument(
        "--finetune-args", default="", help='more options for every fine-tune, e.g. "--data.num_workers 0"'
    )
    parser.add_argument(
        "--reuse-scratch",
        action="store_true",
        help="take the scratch trials from the earlier report (same fine-tuning budget), not rerun them",
    )
    parser.add_argument("--work", type=Path, default=None, help="default: runs/label_efficiency/<dataset>")
    args = parser.parse_args(argv)
    dataset = DATASETS[args.dataset]
    args.work = args.work or Path("runs/label_efficiency") / args.dataset
    if not set(dataset.modes) & set(args.modes):
        sys.exit(f"{args.dataset} takes --modes {' '.join(dataset.modes)}")
    unknown = [m for m in args.methods if m not in dataset.backbones]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}: choose from {sorted(dataset.backbones)}")
    budgets = {m: args.pretrain_steps or dataset.pretrain_steps.get(m) for m in args.methods}
    unbudgeted = [m for m, steps in budgets.items() if steps is None]
    if unbudgeted:  # before any run: a refusal after hours of pretraining the other methods helps no one
        sys.exit(
            f"no pretraining budget for {', '.join(unbudgeted)} on {args.dataset}: pass --pretrain-steps"
        )
    missing = missing_scratch(dataset, args.methods, args) if args.reuse_scratch else []
    if missing:
        sys.exit(f"--reuse-scratch: the report has no scratch trial for {'; '.join(missing)}")
    stale = stale_pretraining(dataset, budgets, args.work)  # before any run, like the refusals above
    if stale:
        sys.exit(stale)
    runs, pretraining = {}, {}
    for method, steps in budgets.items():
        runs[method], pretraining[method] = pretrain(dataset, method, args.work, steps)
    trials = []
    for backbone in dict.fromkeys(dataset.backbones[m] for m in args.methods):
        group = {m: runs[m] for m in args.methods if dataset.backbones[m] == backbone}
        trials += compare(dataset, backbone, group, args)
    write_report(dataset, trials, pretraining, args)


if __name__ == "__main__":
    run()
