"""The label-efficiency report: the pieces a benchmark is run in, merged; tables, plots, human agreement.

``results/label_efficiency_<dataset>.json`` holds every trial; a run adds its trials to it, replacing (never
mixing) those that were run on another budget (see ``merge_earlier_pieces``). ``.md`` and ``.png`` are drawn
from the merged JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.metrics import DiceMetric

from medssl.data.paths import data_dir
from medssl.data.readers import LoadItemd
from medssl.evaluation import report
from medssl.finetune.seg_data import paired_folders
from medssl.finetune.segmentation import scored_one_hot

if TYPE_CHECKING:
    from collections.abc import Iterable

    from label_efficiency import Dataset

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class SecondReading:
    """A second expert's masks of the test images (folders under the data folder): human agreement."""

    first: str  # the test labels models are scored against
    second: str
    fov: str | None = None  # scored inside this field of view, as the models are


def report_path(dataset: Dataset) -> Path:
    """``results/label_efficiency_<dataset>`` without its suffix (.json / .md / .png)."""
    return HERE / "results" / f"label_efficiency_{dataset.name.rsplit('_', 1)[0]}"


def write_report(
    dataset: Dataset, trials: list[dict], pretraining: dict[str, dict], args: argparse.Namespace
) -> None:
    out = report_path(dataset)
    metric = "test/auroc" if "frozen" in dataset.modes else "test/dice"
    payload = {
        "dataset": dataset.name,
        "metric": metric,
        "pretraining": pretraining,
        "finetune_steps": args.finetune_steps or dataset.finetune_steps,
        "cpu_backbones": dataset.cpu_backbones,
        "finetune_args": args.finetune_args,
        "trials": trials,
    }
    agreement = second_reader_dice(dataset.second_reading, data_dir()) if dataset.second_reading else None
    if agreement:
        payload["second_reader"] = agreement
    payload = merge_earlier_pieces(payload, out.with_suffix(".json"))
    trials, pretraining = payload["trials"], payload["pretraining"]
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    budget = ", ".join(f"{m} {s['steps']} steps / {_minutes(s)} min" for m, s in pretraining.items())
    steps = args.finetune_steps or dataset.finetune_steps
    lines = [
        f"Pretraining on 2 CPU cores: {budget}; every fine-tune {steps} steps"
        + (f" with `{args.finetune_args}`." if args.finetune_args else "."),
        *(f"`{name}`: `backbone_kwargs: {kw}` (CPU budget)." for name, kw in dataset.cpu_backbones.items()),
        *([second_reader_line(agreement)] if agreement else []),
        "",
    ]
    references = {"second annotator": agreement["dice"]} if agreement else {}
    plots = plot_paths(out, list(dict.fromkeys(t["backbone"] for t in trials)))
    remove_stale_plots(out, plots.values())
    for backbone, png in plots.items():  # one table and plot per backbone family: its own scratch baseline
        group = [t for t in trials if t["backbone"] == backbone]
        title = f"{dataset.name}, {backbone}: SSL-pretrained vs scratch"
        lines.append(report.markdown(group, metric, title))
        if any(t["mode"] == "frozen" for t in group):
            knn = [t for t in group if t["mode"] == "frozen"]
            lines.append(report.markdown(knn, "test/knn_auroc", "kNN on frozen features").split("\n", 2)[2])
        if metric == "test/dice" and all("test/auroc" in t["metrics"] for t in group):  # one class: DRIVE
            lines.append(report.markdown(group, "test/auroc", "pixel AUROC").split("\n", 2)[2])
        report.plot(group, metric, png, title, references)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {out}.json / .md / .png")


def plot_paths(out: Path, families: list[str]) -> dict[str, Path]:
    """Backbone family -> its plot: ``<out>.png`` for one family, ``<out>_<backbone>.png`` for several."""
    if len(families) == 1:
        return {families[0]: out.with_suffix(".png")}
    return {backbone: out.parent / f"{out.name}_{backbone}.png" for backbone in families}


def remove_stale_plots(out: Path, plots: Iterable[Path]) -> None:
    """Delete this report's plots that ``plots`` does not redraw (the single one, once a family is added)."""
    for png in {out.with_suffix(".png"), *out.parent.glob(f"{out.name}_*.png")} - set(plots):
        png.unlink(missing_ok=True)


def second_reader_line(agreement: dict) -> str:
    return (
        f"Second annotator (`{agreement['masks']}` against the test labels, scored like the models): Dice"
        f" {agreement['dice']:.3f} +- {agreement['std']:.3f} over {agreement['images']} images."
    )


def second_reader_dice(reading: SecondReading, root: Path) -> dict | None:
    """The second expert's Dice against the test labels, scored per image like the models (mean, std).

    None, with a note, when this copy of the dataset has no second expert's masks.
    """
    if not (root / reading.second).is_dir():
        print(f"no second annotation at {root / reading.second}: the report has no human reference")
        return None
    fov = root / reading.fov if reading.fov else None
    items = paired_folders(root / reading.first, root / reading.second, fov)
    load = LoadItemd(["image", "mask", "fov"], allow_missing_keys=True)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    for item in items:  # paired_folders: "image" = the first expert's mask, "mask" = the second's
        case = load(item)
        truth, other = ((case[key][None] > 0).long() for key in ("image", "mask"))  # (1, 1, *S)
        inside = case["fov"][None] > 0 if "fov" in case else None
        dice(*scored_one_hot(other, truth, inside, classes=2))
    per_image = dice.aggregate()
    assert isinstance(per_image, torch.Tensor)
    scored = [value for value in per_image.flatten().tolist() if not math.isnan(value)]  # NaN: no vessel
    mean, std = report.mean_std(scored)
    return {"dice": round(mean, 4), "std": round(std, 4), "images": len(scored), "masks": reading.second}


def merge_earlier_pieces(payload: dict, path: Path) -> dict:
    """This run's trials plus those of earlier runs in ``path`` (this run's win).

    The benchmark runs in pieces (a mode, a fraction or a method at a time); the report holds them all.
    Earlier results with another fine-tuning budget or options are replaced, not mixed in; so are the
    trials of a backbone family whose CPU options changed, and those of a method pretrained again (another
    pretraining run, even at the same budget, unless it ``reproduces`` the weights). Scratch trials stay.
    """
    if not path.is_file():
        return payload
    earlier = json.loads(path.read_text())
    if not same_finetuning(earlier, payload):
        print(f"{path.name}: earlier results used another fine-tuning budget or options, replaced")
        return payload
    reproduced = {
        method
        for method, stats in payload["pretraining"].items()
        if reproduces(earlier["pretraining"].get(method), stats)
    }
    repretrained = {
        method
        for method, stats in payload["pretraining"].items()
        if earlier["pretraining"].get(method, stats) != stats and method not in reproduced
    }
    families = {t["backbone"] for t in earlier["trials"]}
    rebuilt = {b for b in families if not same_backbone_options(earlier, payload, b)}
    kept = [t for t in earlier["trials"] if t["init"] not in repretrained and t["backbone"] not in rebuilt]
    if repretrained:
        print(f"{path.name}: {', '.join(sorted(repretrained))} pretrained again, earlier trials replaced")
    if reproduced:
        print(f"{path.name}: {', '.join(sorted(reproduced))} reproduced their weights, trials kept")
    if rebuilt:
        print(f"{path.name}: {', '.join(sorted(rebuilt))} built with other options, earlier trials replaced")

    def key(trial: dict) -> tuple:
        return trial["backbone"], trial["init"], trial["mode"], trial["label_fraction"], trial["seed"]

    trials = {key(t): t for t in kept} | {key(t): t for t in payload["trials"]}
    order = sorted(trials, key=lambda k: (k[0], k[2], k[3], k[4], k[1] != "scratch", k[1]))
    first_runs = {m: earlier["pretraining"][m] for m in reproduced}  # the minutes the kept trials came with
    return payload | {
        "pretraining": earlier["pretraining"] | payload["pretraining"] | first_runs,
        "trials": [trials[k] for k in order],
    }


def reproduces(earlier: dict | None, stats: dict) -> bool:
    """Whether a pretraining run (``stats``) gave bit for bit the weights of an earlier one, on its budget.

    A seeded run repeated on the same kind of machine can (SimCLR and DINO on Hippocampus did): its trials
    are those of the earlier run, which a fresh work folder then need not repeat. Earlier records without a
    ``weights_sha256`` (reports before it) never match.
    """
    if earlier is None or "weights_sha256" not in earlier:
        return False
    same_weights = earlier["weights_sha256"] == stats.get("weights_sha256")
    return same_weights and asked(earlier) == asked(stats)


def _minutes(stats: dict) -> str:
    """A pretraining run's minutes; ``~`` when it was stopped and resumed (scaled from the resumed part)."""
    return f"{'~' if 'resumed_at_step' in stats else ''}{stats['minutes']}"


#: what a pretraining record holds of the run itself, beside the budget it was asked for
MEASURED = ("minutes", "weights_sha256", "resumed_at_step", "cpu", "threads")


def asked(stats: dict) -> dict:
    """A pretraining record's budget (steps, extra options): the record less ``MEASURED``."""
    return {k: v for k, v in stats.items() if k not in MEASURED}


def same_finetuning(earlier: dict, payload: dict) -> bool:
    """Same dataset, fine-tuning steps and ``--finetune-args`` (those that can change a result)."""
    same_budget = all(earlier.get(k) == payload[k] for k in ("dataset", "finetune_steps"))
    earlier_options, options = (result_options(p.get("finetune_args", "")) for p in (earlier, payload))
    return same_budget and earlier_options == options


def result_options(finetune_args: str) -> list[str]:
    """``--finetune-args`` less ``--data.num_workers``, which changes the speed, not the result."""
    words, kept = iter(shlex.split(finetune_args)), []
    for word in words:
        if word == "--data.num_workers":
            next(words, None)
        elif not word.startswith("--data.num_workers="):
            kept.append(word)
    return kept


def same_backbone_options(earlier: dict, payload: dict, backbone: str) -> bool:
    """Whether ``backbone`` was built with the same CPU-budget options (or the recipe's own) in both."""
    return earlier.get("cpu_backbones", {}).get(backbone) == payload["cpu_backbones"].get(backbone)
