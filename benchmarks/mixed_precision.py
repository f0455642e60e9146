"""bf16-mixed vs fp32 training throughput on this CPU, for medssl (Lightning precision) and plain PyTorch.

Workloads (``workloads.py``): SimCLR ResNet-18 2D (64 px, batch 64) with the default (NCHW) layout and with
``channels_last``, and MAE ViT-Tiny 2D. For each, four variants in one process: medssl ``32-true`` and
``bf16-mixed`` through the Lightning Trainer (fits of ``--steps`` steps, alternating for ``--rounds``
rounds after a warm-up round), and the plain PyTorch loop without / with ``torch.autocast(bfloat16)``, one
step of the same precision interleaved before every medssl step (``workloads.Interleave``): a fit runs one
precision throughout, as a training run does. The ratio judged is the
medssl speed-up, median fp32 step / median bf16 step (target >= 1.8); the plain speed-up alongside.

    python benchmarks/mixed_precision.py            # ~10 min on 2 quiet cores
    python benchmarks/mixed_precision.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

#: Both precisions alternate in one process, so both sets of oneDNN primitives must stay cached: with the
#: default capacity (1024), bf16 steps alternating with fp32 steps re-create (JIT-compile) their kernels
#: and measured 2x slower than they run (SimCLR ResNet-18: 1.00 s vs 0.58 s in a block of bf16 steps).
#: A training run uses one precision and is not affected. Set before torch loads oneDNN.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")

import torch
import workloads
from bench_utils import environment, load_line, summary, write_results

TARGET = 1.8
CASES = {  # case -> (workload, channels_last)
    "simclr_resnet18": ("simclr_resnet18", False),
    "simclr_resnet18_channels_last": ("simclr_resnet18", True),
    "mae_vit_tiny": ("mae_vit_tiny", False),
}


def run(rounds: int, steps: int, threads: int, root: Path, warmup_rounds: int = 1) -> dict[str, Any]:
    torch.set_num_threads(threads)
    result: dict[str, Any] = {"environment": environment(threads), "target_speedup": TARGET}
    result["onednn_primitive_cache_capacity"] = int(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"])
    result |= {"rounds": rounds, "steps": steps}
    total = (warmup_rounds + rounds) * 2 * steps
    for case, (name, channels_last) in CASES.items():
        method = workloads.medssl_method(name, channels_last=channels_last)
        plain = workloads.plain_model(name, method, channels_last=channels_last)
        batch = workloads.fixed_batch(name)
        steppers = {
            f"plain_{p}": workloads.plain_stepper(plain, batch, total, p == "bf16") for p in ("fp32", "bf16")
        }
        times: dict[str, list[float]] = {k: [] for k in ("medssl_32-true", "medssl_bf16-mixed", *steppers)}
        for i in range(warmup_rounds + rounds):
            for precision in ("32-true", "bf16-mixed"):  # fits alternate, each one precision throughout
                plain_key = "plain_bf16" if precision == "bf16-mixed" else "plain_fp32"
                own = {plain_key: steppers[plain_key]}
                fit = workloads.interleaved_fit(method, batch, steps, precision, root / case, False, own)
                if i >= warmup_rounds:
                    times[f"medssl_{precision}"] += fit["medssl"]
                    times[plain_key] += fit[plain_key]
        stats = summary(times)
        median = {variant: s["median"] for variant, s in stats.items()}
        result[case] = {
            "title": workloads.title(name) + (", channels-last" if channels_last else ""),
            "seconds": times,
            "stats": stats,
            "speedup_medssl": median["medssl_32-true"] / median["medssl_bf16-mixed"],
            "speedup_plain": median["plain_fp32"] / median["plain_bf16"],
        }
    result["environment"]["load_average_after"] = list(os.getloadavg())
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# bf16-mixed vs fp32 on this CPU",
        "",
        f"Training step (forward, backward, AdamW, schedule) on a ready-made batch, {env['threads']} "
        f"threads; medssl fp32 and bf16 fits of {result['steps']} steps alternate for {result['rounds']} "
        "rounds after a warm-up round (first step of each fit not timed), one step of the plain loop "
        f"of the same precision runs before every medssl step; medians; oneDNN primitive cache "
        f"{result['onednn_primitive_cache_capacity']} (both precisions' kernels stay compiled). "
        f"{env['cpu']}, torch {env['torch']}. "
        f"{load_line(env, env['load_average_after'])}.",
        "",
        "| workload | medssl fp32 (s) | medssl bf16 (s) | **medssl speed-up** | plain fp32 (s) "
        "| plain bf16 (s) | plain speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        r = result[case]
        m = {variant: s["median"] for variant, s in r["stats"].items()}
        lines.append(
            f"| {r['title']} | {m['medssl_32-true']:.3f} | {m['medssl_bf16-mixed']:.3f} "
            f"| **{r['speedup_medssl']:.2f}x** | {m['plain_fp32']:.3f} | {m['plain_bf16']:.3f} "
            f"| {r['speedup_plain']:.2f}x |"
        )
    lines += ["", f"Target: medssl bf16-mixed >= {result['target_speedup']}x the fp32 throughput.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="batches per chunk (the first is not timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: checks the script runs")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        workloads.shrink_for_smoke_test()
        args.rounds, args.steps = 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.rounds, args.steps, args.threads, Path(tmp), 0 if args.quick else 1)
    for case in CASES:
        r = result[case]
        print(f"{case}: bf16 speed-up medssl {r['speedup_medssl']:.2f}x, plain {r['speedup_plain']:.2f}x")
    write_results("mixed_precision", result, markdown(result), *([args.out] if args.out else []))


if __name__ == "__main__":
    main()
