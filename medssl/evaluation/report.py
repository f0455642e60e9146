"""The comparison report: mean +- std over seeds per label fraction, as a Markdown table and a PNG plot."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medssl.evaluation.compare import SCRATCH

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Key = tuple[str, str]  # (init, mode)
MODE_TITLES = {
    "finetune": "fine-tuned",
    "frozen": "linear probe on frozen features",
    "linear_probe": "linear head on the frozen backbone",
    "frozen_encoder": "decoder on the frozen encoder",
}


def summarise(records: list[dict[str, Any]], metric: str) -> dict[Key, dict[float, list[float]]]:
    """``{(init, mode): {label_fraction: [metric of each seed]}}``, seeds in record order."""
    table: dict[Key, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if metric not in record["metrics"]:
            raise KeyError(f"trial {record['run']} has no {metric!r}; it has {sorted(record['metrics'])}")
        table[(record["init"], record["mode"])][record["label_fraction"]].append(record["metrics"][metric])
    return table


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gain(records: list[dict[str, Any]], metric: str, init: str, mode: str) -> dict[float, list[float]]:
    """``{fraction: [pretrained - scratch for each seed both ran]}``: the gain, seed by seed."""
    by_trial = {(r["init"], r["mode"], r["label_fraction"], r["seed"]): r["metrics"][metric] for r in records}
    gains: dict[float, list[float]] = defaultdict(list)
    for (i, m, fraction, seed), value in sorted(by_trial.items()):
        if i == init and m == mode and (SCRATCH, m, fraction, seed) in by_trial:
            gains[fraction].append(value - by_trial[(SCRATCH, m, fraction, seed)])
    return gains


def markdown(records: list[dict[str, Any]], metric: str, title: str) -> str:
    """One table per mode: a row per label fraction, a column per init, and the gain over scratch."""
    table = summarise(records, metric)
    cases = {(r["label_fraction"], r["seed"]): r["train_images"] for r in records}
    lines = [f"# {title}", "", f"`{metric}` on the test split, mean +- std over seeds (n = seeds).", ""]
    for mode in sorted({mode for _, mode in table}):
        inits = sorted((i for i, m in table if m == mode), key=lambda i: (i != SCRATCH, i))
        pretrained = [i for i in inits if i != SCRATCH]
        header = ["label fraction", "training images", *inits, *(f"{i} - scratch" for i in pretrained)]
        lines += [f"## {mode}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for fraction in sorted({f for i in inits for f in table[(i, mode)]}):
            n_cases = sorted({n for (f, _), n in cases.items() if f == fraction})
            row = [f"{fraction:g}", "/".join(map(str, n_cases))]
            row += [_cell(table[(i, mode)].get(fraction, [])) for i in inits]
            row += [
                _cell(paired_gain(records, metric, i, mode).get(fraction, []), sign=True) for i in pretrained
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(
    records: list[dict[str, Any]],
    metric: str,
    path: Path,
    title: str,
    references: Mapping[str, float] | None = None,
) -> Path:
    """:func:`figure` saved as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure(records, metric, title, references).savefig(path)
    return path


def figure(
    records: list[dict[str, Any]], metric: str, title: str, references: Mapping[str, float] | None = None
) -> Figure:
    """Metric vs label fraction (log axis): a panel per mode, a curve per init (scratch dashed), +- std.

    ``references``: levels drawn across every panel as dotted grey lines (e.g. a second annotator's Dice).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = summarise(records, metric)
    modes = sorted({mode for _, mode in curves}, key=lambda m: (m != "finetune", m))
    inits = sorted({init for init, _ in curves} - {SCRATCH})
    colours = {SCRATCH: "black"} | {init: f"C{i}" for i, init in enumerate(inits)}  # one colour per init
    fig = Figure(figsize=(4.5 * len(modes) + 1, 4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, never pyplot: no display, no global figure state
    panels = fig.subplots(1, len(modes), sharey=True, squeeze=False)[0]
    percents = sorted({100 * r["label_fraction"] for r in records})
    for axes, mode in zip(panels, modes, strict=True):
        for init in [SCRATCH, *inits]:
            by_fraction = curves.get((init, mode))
            if not by_fraction:
                continue
            fractions = sorted(by_fraction)
            stats = [mean_std(by_fraction[f]) for f in fractions]
            axes.errorbar(
                [100 * f for f in fractions], [m for m, _ in stats], yerr=[s for _, s in stats],
                fmt="o--" if init == SCRATCH else "o-", color=colours[init], capsize=3, label=init,
            )  # fmt: skip
        for i, (name, level) in enumerate((references or {}).items()):
            axes.axhline(level, color="grey", linestyle=":" if i == 0 else "-.", label=name)
        axes.set_xscale("log")
        axes.set_xticks(percents, labels=[f"{p:g}%" for p in percents])
        axes.minorticks_off()
        axes.set_xlabel("labelled training data (%)")
        axes.set_title(MODE_TITLES.get(mode, mode))
        axes.grid(True, alpha=0.3)
        axes.legend()
    panels[0].set_ylabel(metric)
    fig.suptitle(title)
    return fig


def _cell(values: list[float], sign: bool = False) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return (
        f"{mean:+.3f} +- {std:.3f} (n={len(values)})"
        if sign
        else f"{mean:.3f} +- {std:.3f} (n={len(values)})"
    )
