"""Framework overhead: a medssl training step through the Lightning Trainer vs a plain PyTorch loop.

Both compute the same model, views and loss on the same ready-made batch with the same threads (see
``workloads.py``): SimCLR ResNet-18 2D (64 px, batch 64) and MAE ViT-Tiny 2D. The medssl side runs as a
recipe does (loggers every 10 steps, learning-rate monitor, progress bar). The sides alternate step by step
inside one ``Trainer.fit`` (``workloads.Interleave``); the ratio judged is median medssl step / median
plain step (target <= 1.05).

    python benchmarks/framework_overhead.py            # ~3 min on 2 quiet cores
    python benchmarks/framework_overhead.py --quick    # smoke test: tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import workloads
from bench_utils import environment, load_line, summary, write_results

TARGET = 1.05


def run(steps: int, threads: int, root: Path) -> dict[str, Any]:
    torch.set_num_threads(threads)
    env = environment(threads)
    result: dict[str, Any] = {"environment": env, "target_ratio": TARGET, "steps": steps}
    for name in workloads.WORKLOADS:
        method = workloads.medssl_method(name)
        plain = workloads.plain_model(name, method)
        same = workloads.check_same_loss(name, method, plain)
        batch = workloads.fixed_batch(name)
        stepper = workloads.plain_stepper(plain, batch, steps, bf16=False)
        times = workloads.interleaved_fit(
            method, batch, steps, "32-true", root / name, like_recipe=True, plain={"plain": stepper}, skip=2
        )
        stats = summary(times)
        paired = [m / p for m, p in zip(times["medssl"], times["plain"], strict=False)]
        result[name] = {
            "title": workloads.title(name),
            "loss_check": same,
            "seconds": times,
            "stats": stats,
            "ratio": stats["medssl"]["median"] / stats["plain"]["median"],
            "median_paired_ratio": statistics.median(paired),
        }
    result["environment"]["load_average_after"] = list(os.getloadavg())
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Framework overhead: medssl (Lightning Trainer) vs a plain PyTorch loop",
        "",
        f"Same model, views, loss and batch on both sides; fp32, {env['threads']} threads; step = start of "
        "one batch to the start of the next, minus the plain step run in between: the sides alternate step "
        f"by step in one `Trainer.fit` of {result['steps']} steps (the first 2 not timed). "
        f"torch {env['torch']}, "
        f"Lightning {env['pytorch_lightning']}, {env['cpu']}. {load_line(env, env['load_average_after'])}.",
        "",
        "| workload | medssl median step (s) | plain median step (s) | ratio | median of paired ratios "
        "| target |",
        "|---|---|---|---|---|---|",
    ]
    for name in workloads.WORKLOADS:
        r = result[name]
        ok = "meets" if r["ratio"] <= result["target_ratio"] else "misses"
        lines.append(
            f"| {r['title']} | {r['stats']['medssl']['median']:.3f} | {r['stats']['plain']['median']:.3f} "
            f"| **{r['ratio']:.3f}** | {r['median_paired_ratio']:.3f} | <= {result['target_ratio']} ({ok}) |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=42, help="steps per side (the first 2 are not timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: checks the script runs")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        workloads.shrink_for_smoke_test()
        args.steps = 4
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.steps, args.threads, Path(tmp))
    for name in workloads.WORKLOADS:
        print(f"{name}: medssl / plain step = {result[name]['ratio']:.3f} (target <= {TARGET})")
    write_results("framework_overhead", result, markdown(result), *([args.out] if args.out else []))


if __name__ == "__main__":
    main()
