"""The comparison report: mean +- std over seeds per label fraction, as a Markdown table and a PNG plot."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from medssl.evaluation.compare import SCRATCH

Key = tuple[str, str]  # (init, mode)


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


def plot(records: list[dict[str, Any]], metric: str, path: Path, title: str) -> Path:
    """Metric vs label fraction (log axis), a curve per (init, mode) with +- std error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, never pyplot: no display, no global figure state
    axes = fig.subplots()
    for (init, mode), by_fraction in sorted(summarise(records, metric).items()):
        fractions = sorted(by_fraction)
        stats = [mean_std(by_fraction[f]) for f in fractions]
        label = init if mode == "finetune" else f"{init} ({mode})"
        style = "--" if init == SCRATCH else "-"
        axes.errorbar(
            [100 * f for f in fractions], [m for m, _ in stats], yerr=[s for _, s in stats],
            fmt=f"o{style}", capsize=3, label=label,
        )  # fmt: skip
    axes.set_xscale("log")
    percents = sorted({100 * r["label_fraction"] for r in records})
    axes.set_xticks(percents, labels=[f"{p:g}%" for p in percents])
    axes.minorticks_off()
    axes.set_xlabel("labelled training data (%)")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _cell(values: list[float], sign: bool = False) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return (
        f"{mean:+.3f} +- {std:.3f} (n={len(values)})"
        if sign
        else f"{mean:.3f} +- {std:.3f} (n={len(values)})"
    )
