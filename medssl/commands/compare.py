"""``medssl compare``: fine-tune with and without pretraining over label fractions x seeds; table + plot.

Options after the known ones go to every ``medssl finetune`` run, e.g. ``--trainer.max_epochs 10``.
Writes ``compare.json`` (every trial), ``compare.md`` (mean +- std per fraction, gain over scratch) and
``compare.png`` (metric vs label fraction) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medssl.commands.run_cli import UsageError
from medssl.evaluation.compare import TASK_MODES

SWEPT = ("--model.pretrained", "--model.mode", "--data.label_fraction", "--data.seed", "--seed_everything")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medssl compare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="fine-tuning recipe (recipes/finetune/*.yaml)")
    parser.add_argument(
        "--pretrained",
        nargs="+",
        default=[],
        metavar="[NAME=]PATH",
        help="pretraining run, checkpoint or export folder(s); NAME labels it (default: the folder name)",
    )
    parser.add_argument("--label-fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(dict.fromkeys(mode for modes in TASK_MODES.values() for mode in modes)),
        default=["finetune"],
        help="finetune; classification: linear_probe (head trained through the frozen backbone), frozen "
        "(medssl evaluate: L-BFGS linear probe and kNN on cached features, seconds); segmentation: "
        "frozen_encoder (decoder and head trained on the frozen encoder)",
    )
    parser.add_argument("--metric", default=None, help="test metric to report (default: auroc / dice)")
    parser.add_argument("--no-scratch", action="store_true", help="leave out the from-scratch runs")
    parser.add_argument("--out", default=None, help="output folder (default: runs/compare_<recipe name>)")
    return parser


def run(args: list[str]) -> Path:
    """Run the sweep (reusing finished trials), then write and print the report; returns ``--out``."""
    from medssl.evaluation import compare, report

    options, overrides = build_parser().parse_known_args(args)
    fixed = [flag for flag in overrides if flag.split("=", 1)[0] in SWEPT]
    if fixed:
        raise UsageError(f"medssl compare sets {', '.join(fixed)} itself for each trial; use its own options")
    pretrained = dict(_named(source) for source in options.pretrained)
    if not pretrained and options.no_scratch:
        raise UsageError("nothing to compare: give --pretrained and/or keep the scratch runs")
    out = Path(options.out or f"runs/compare_{Path(options.config).stem}")
    trials = compare.plan(
        pretrained, options.label_fractions, options.seeds, options.modes, scratch=not options.no_scratch
    )
    records = compare.run_sweep(trials, options.config, out, overrides)
    metric = options.metric or compare.default_metric(records)
    compare.write_results(out, records, options.config, metric)
    title = f"{Path(options.config).stem}: pretrained vs scratch"
    table = report.markdown(records, metric, title)
    (out / "compare.md").write_text(table + "\n")
    report.plot(records, metric, out / "compare.png", title)
    print(table)
    print(f"comparison: {(out / 'compare.md').resolve()} and compare.png, every trial in compare.json")
    return out


def _named(source: str) -> tuple[str, str]:
    name, sep, path = source.partition("=")
    if not sep:
        name, path = Path(source).name or source, source
    if name == "scratch":
        raise UsageError("'scratch' names the from-scratch runs; give the pretrained source another NAME")
    if not Path(path).expanduser().exists():  # found now, not after the first scratch runs
        raise UsageError(f"--pretrained {source}: {path} does not exist")
    return name, path
