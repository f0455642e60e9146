"""Where bf16-mixed time goes on this CPU: the hardware's ceiling, the kernels oneDNN picks, a per-op profile.

``mixed_precision.py`` measures the speed-up; this script explains it, in three parts:

1. ceiling: fp32 vs bf16 time of the workloads' own largest matmul and convolution shapes, alone (what
   AMX / AVX512-BF16 can give a single kernel of that size);
2. dispatch: the oneDNN implementation (ISA) each bf16 kernel runs on (``ONEDNN_VERBOSE``, in a subprocess);
3. profile: the plain PyTorch training step (``workloads``), fp32 and bf16 autocast, split into forward /
   backward / optimiser wall time and torch.profiler self time by op category (matmul + convolution,
   dtype casts, normalisation + softmax + element-wise, the rest), medians of ``--steps`` steps.

    python benchmarks/precision_profile.py            # ~3 min on 2 quiet AMX cores; more without bf16 ISA
    python benchmarks/precision_profile.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import workloads
from bench_utils import RESULTS, environment, load_line, write_results
from torch.profiler import ProfilerActivity, profile

#: (name, op, shapes) run alone in both dtypes: the largest GEMM / convolution of each workload
KERNELS: dict[str, tuple[str, tuple[tuple[int, ...], ...]]] = {
    "ViT-Tiny MLP GEMM (1024x192 @ 192x768)": ("matmul", ((1024, 192), (192, 768))),
    "ResNet-18 layer1 conv (128x64x16x16, 3x3)": ("conv", ((128, 64, 16, 16), (64, 64, 3, 3))),
    "ResNet-18 layer4 conv (128x512x2x2, 3x3)": ("conv", ((128, 512, 2, 2), (512, 512, 3, 3))),
    "square GEMM 2048^3 (large, AMX-friendly)": ("matmul", ((2048, 2048), (2048, 2048))),
}
#: ``--quick``: the same kernels at smoke-test sizes (a CPU without bf16 instructions emulates them: the
#: 2048^3 bf16 GEMM alone takes 90 s on an AVX2-only EPYC, 400x its fp32 time)
SMOKE_KERNELS = {
    name: (op, ((64, 64), (64, 64)) if op == "matmul" else ((2, 8, 8, 8), (8, 8, 3, 3)))
    for name, (op, _) in KERNELS.items()
}
CATEGORIES = {
    "matmul + convolution": ("mm", "addmm", "bmm", "convolution", "linear", "matmul", "attention"),
    "dtype casts / copies": ("to_copy", "copy_", "aten::to", "clone", "contiguous"),
    "norm / softmax / element-wise": ("norm", "softmax", "gelu", "relu", "add", "mul", "div", "sub", "exp"),
}


def _timed(fn: Callable[[], Any], repeats: int, max_seconds: float = 30.0) -> float:
    """Median time of ``repeats`` calls, or of as many as fit ``max_seconds`` (emulated bf16 is slow)."""
    fn()  # warm-up: oneDNN primitive creation
    times: list[float] = []
    while len(times) < repeats and sum(times) < max_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceiling(repeats: int, kernels: dict) -> dict[str, dict[str, float]]:
    out = {}
    for name, (op, shapes) in kernels.items():
        row = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = (torch.randn(s).to(dtype) for s in shapes)
            fn = (lambda a=a, b=b: a @ b) if op == "matmul" else (lambda a=a, b=b: F.conv2d(a, b, padding=1))
            row[str(dtype).removeprefix("torch.")] = _timed(fn, repeats)
        out[name] = row | {"speedup": row["float32"] / row["bfloat16"]}
    return out


DISPATCH_PROBE = """
import torch, torch.nn.functional as F
a = torch.randn(1024, 192).bfloat16(); b = torch.randn(192, 768).bfloat16(); a @ b
x = torch.randn(8, 64, 16, 16).bfloat16(); w = torch.randn(64, 64, 3, 3).bfloat16(); F.conv2d(x, w, padding=1)
"""


def dispatch() -> dict[str, list[str]]:
    """oneDNN's implementation names for a bf16 GEMM and convolution, e.g. ``brg_conv_fwd:..._amx``."""
    proc = subprocess.run(
        [sys.executable, "-c", DISPATCH_PROBE],
        env={"ONEDNN_VERBOSE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    kernels: dict[str, list[str]] = defaultdict(list)
    for line in proc.stdout.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in fields and len(fields) > 5:
            kind, impl = fields[fields.index("exec") + 2], fields[fields.index("exec") + 3]
            if impl not in kernels[kind]:
                kernels[kind].append(impl)
    isa = [line.split("isa:", 1)[1] for line in proc.stdout.splitlines() if ",cpu,isa:" in line]
    return {"isa": isa, **kernels}


def category(op: str) -> str:
    return next((c for c, keys in CATEGORIES.items() if any(k in op for k in keys)), "other")


def step_profile(name: str, bf16: bool, steps: int) -> dict[str, Any]:
    method = workloads.medssl_method(name)
    model = workloads.plain_model(name, method)
    batch = workloads.fixed_batch(name)
    optimizer, _ = workloads.make_optimizer(model, steps + 2)
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}

    def step(record: bool) -> None:
        marks = [time.perf_counter()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(batch)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if record:
            for phase, (a, b) in zip(phases, itertools.pairwise(marks), strict=True):
                phases[phase].append(b - a)

    step(record=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(record=True)
    by_category: dict[str, float] = defaultdict(float)
    top = []
    for event in prof.key_averages():
        by_category[category(event.key)] += event.self_cpu_time_total / 1e6 / steps
        top.append((event.self_cpu_time_total / 1e6 / steps, event.key))
    return {
        "phases": {k: statistics.median(v) for k, v in phases.items()},
        "categories": dict(by_category),
        "top_ops": [{"op": op, "seconds": s} for s, op in sorted(top, reverse=True)[:8]],
    }


def run(steps: int, repeats: int, threads: int, kernels: dict) -> dict[str, Any]:
    torch.set_num_threads(threads)
    result: dict[str, Any] = {"environment": environment(threads), "steps": steps}
    result["ceiling"] = ceiling(repeats, kernels)
    result["dispatch"] = dispatch()
    for name in workloads.WORKLOADS:
        result[name] = {
            "title": workloads.title(name),
            **{p: step_profile(name, p == "bf16", steps) for p in ("fp32", "bf16")},
        }
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Where bf16-mixed time goes on this CPU",
        "",
        f"{env['cpu']}, torch {env['torch']}, {env['threads']} threads; {load_line(env)}.",
        "",
        "## 1. Ceiling: one kernel alone, fp32 vs bf16 (median)",
        "",
        "| kernel | fp32 (ms) | bf16 (ms) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, r in result["ceiling"].items():
        lines.append(
            f"| {name} | {r['float32'] * 1e3:.2f} | {r['bfloat16'] * 1e3:.2f} | {r['speedup']:.2f}x |"
        )
    lines += ["", "## 2. oneDNN implementations of bf16 kernels (ONEDNN_VERBOSE)", ""]
    lines += [f"- {kind}: {', '.join(f'`{i}`' for i in impls)}" for kind, impls in result["dispatch"].items()]
    for name in workloads.WORKLOADS:
        r = result[name]
        fp32, bf16 = r["fp32"], r["bf16"]
        lines += [
            "",
            f"## 3. {r['title']}: plain PyTorch step, {result['steps']} steps",
            "",
            "| part | fp32 (ms) | bf16 (ms) | speed-up |",
            "|---|---|---|---|",
        ]
        rows = [(f"wall: {k}", fp32["phases"][k], bf16["phases"][k]) for k in fp32["phases"]]
        keys = list(dict.fromkeys([*CATEGORIES, "other"]))
        rows += [
            (f"self time: {k}", fp32["categories"].get(k, 0.0), bf16["categories"].get(k, 0.0)) for k in keys
        ]
        for label, a, b in rows:
            lines.append(f"| {label} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b if b else float('nan'):.2f}x |")
        lines += ["", "Top ops by self time under bf16: " + ", ".join(
            f"`{t['op']}` {t['seconds'] * 1e3:.1f} ms" for t in bf16["top_ops"]
        ) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20, help="timings per kernel in the ceiling part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps: checks the script runs")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)"
    )
    args = parser.parse_args()
    kernels = SMOKE_KERNELS if args.quick else KERNELS
    if args.quick:
        workloads.shrink_for_smoke_test()
        args.steps, args.repeats = 2, 2
    result = run(args.steps, args.repeats, args.threads, kernels)
    write_results("precision_profile", result, markdown(result), args.out)


if __name__ == "__main__":
    main()
