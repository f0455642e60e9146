"""Peak memory of 3D MAE ViT-Base (96^3, patch 16, batch 2) with and without gradient checkpointing.

Each variant trains in its own fresh process: a warm-up step (AdamW allocates its state, gradients stay
allocated: ``zero_grad(set_to_none=False)``), ``--steps`` timed steps, then one forward + backward under the
PyTorch profiler with ``profile_memory=True``, whose allocation events give the peak of the tensor memory
allocated on top of what lives between steps. Reported per variant:

- ``activations``: that peak: activations and temporaries of forward + backward, the part checkpointing acts
  on (with it, only each block's input is kept and the block is recomputed in the backward pass);
- ``total``: weights + gradients + AdamW moments + ``activations``: the training step's peak tensor memory
  (what ``torch.cuda.max_memory_allocated`` reports on a GPU);
- ``process``: the process's peak resident memory (``VmHWM``), which adds the Python / torch runtime.

The reduction judged is ``1 - with / without`` (target >= 40 %). ``--settings all_patches`` runs the same
model with every patch visible (mask ratio 0, as DINO or SimCLR use a ViT), where activations weigh more.

    python benchmarks/checkpointing_memory.py          # ~5 min on 2 cores
    python benchmarks/checkpointing_memory.py --quick  # smoke test: ViT-Tiny at 32^3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_utils import environment, load_line, rss_mib, write_results
from torch.profiler import ProfilerActivity, profile

TARGET = 0.40
SETTINGS = {"mae": 0.75, "all_patches": 0.0}  # name -> mask ratio


def child(
    size: int, patch: int, batch: int, mask_ratio: float, backbone: str, checkpointing: bool, steps: int
):
    """Train in this process; return the memory figures (MiB) and the step times (s)."""
    from medssl.methods import MAE

    torch.manual_seed(0)
    model = MAE(
        backbone=backbone,
        backbone_kwargs={"img_size": size, "patch_size": patch, "grad_checkpointing": checkpointing},
        spatial_dims=3,
        mask_ratio=mask_ratio,
        save_reconstructions=False,
    )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch_ = {"view_0": torch.rand(batch, 1, size, size, size, generator=torch.Generator().manual_seed(0))}

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=False)
        model.compute_loss(batch_)["loss"].backward()

    seconds = []
    for i in range(steps + 1):
        start = time.perf_counter()
        forward_backward()
        optimizer.step()
        if i:  # the first step allocates gradients and AdamW state
            seconds.append(time.perf_counter() - start)
    resident = _tensor_bytes(model.parameters()) + _tensor_bytes(p.grad for p in model.parameters())
    resident += _tensor_bytes(t for state in optimizer.state.values() for t in state.values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward_backward()
    activations = _peak_allocated(prof)
    return {
        "activations_mib": activations / 2**20,
        "resident_mib": resident / 2**20,
        "total_mib": (resident + activations) / 2**20,
        "process_peak_mib": rss_mib("VmHWM"),
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _peak_allocated(prof: profile) -> int:
    """Peak of the running sum of the profiled allocations (+) and frees (-), in bytes."""
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    running, peak = 0, 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def measure(args: argparse.Namespace, mask_ratio: float, checkpointing: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", str(out), "--mask-ratio", str(mask_ratio)]
        command += ["--size", str(args.size), "--patch", str(args.patch), "--batch", str(args.batch)]
        command += ["--backbone", args.backbone, "--steps", str(args.steps), "--threads", str(args.threads)]
        command += ["--checkpointing"] if checkpointing else []
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = environment(args.threads)
    result: dict[str, Any] = {"environment": env, "target_reduction": TARGET}
    result["settings"] = {k: getattr(args, k) for k in ("backbone", "size", "patch", "batch", "steps")}
    for name in args.settings:
        ratio = SETTINGS[name]
        variants = {"without": measure(args, ratio, False), "with": measure(args, ratio, True)}
        keys = ("activations_mib", "total_mib", "process_peak_mib")
        med = {
            v: {k: r[k] for k in keys} | {"seconds": statistics.median(r["seconds"])}
            for v, r in variants.items()
        }
        result[name] = {
            "mask_ratio": ratio,
            "runs": variants,
            "median": med,
            "parameters": variants["without"]["parameters"],
            "resident_mib": variants["without"]["resident_mib"],
            "reduction_activations": 1 - med["with"]["activations_mib"] / med["without"]["activations_mib"],
            "reduction_total": 1 - med["with"]["total_mib"] / med["without"]["total_mib"],
            "reduction_process": 1 - med["with"]["process_peak_mib"] / med["without"]["process_peak_mib"],
            "time_ratio": med["with"]["seconds"] / med["without"]["seconds"],
        }
    result["environment"]["load_average_after"] = list(os.getloadavg())
    return result


def markdown(result: dict[str, Any]) -> str:
    env, s = result["environment"], result["settings"]
    lines = [
        "# Gradient checkpointing: peak memory of 3D MAE",
        "",
        f"{s['backbone']} 3D, {s['size']}^3, patch {s['patch']}, batch {s['batch']}, AdamW, fp32, "
        f"{env['threads']} threads; each variant in a fresh process. Activations: peak tensor memory a "
        "forward + backward allocates (PyTorch profiler allocation events); total: that + weights, "
        "gradients and AdamW moments (the step's peak tensor memory); process: peak RSS including the "
        "Python/torch runtime. "
        f"Step time: median of {s['steps']} steps after a warm-up step. torch {env['torch']}. "
        f"{load_line(env, env['load_average_after'])}.",
        "",
        "| setting | checkpointing | activations (MiB) | total (MiB) | process peak RSS (MiB) | step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        if name not in result:
            continue
        r = result[name]
        label = f"mask {r['mask_ratio']}" + (" (MAE)" if r["mask_ratio"] else " (all patches)")
        for variant in ("without", "with"):
            m = r["median"][variant]
            lines.append(
                f"| {label} | {variant} | {m['activations_mib']:.0f} | {m['total_mib']:.0f} "
                f"| {m['process_peak_mib']:.0f} | {m['seconds']:.2f} |"
            )
    lines.append("")
    for name in SETTINGS:
        if name not in result:
            continue
        r = result[name]
        target = 100 * result["target_reduction"]
        lines.append(
            f"- mask {r['mask_ratio']}: with checkpointing, activation memory "
            f"**{100 * r['reduction_activations']:.0f} % lower**, the step's total tensor memory "
            f"{100 * r['reduction_total']:.0f} % lower, the process peak "
            f"{100 * r['reduction_process']:.0f} % lower (target >= {target:.0f} %); "
            f"the step takes {r['time_ratio']:.2f}x as long. Weights, gradients and AdamW moments of the "
            f"{r['parameters'] / 1e6:.0f} M parameters hold {r['resident_mib']:.0f} MiB that checkpointing "
            "does not touch."
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vit_base")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="ViT-Tiny at 32^3, patch 8, 1 step")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mask-ratio", type=float, default=0.75, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        options = (args.size, args.patch, args.batch, args.mask_ratio, args.backbone, args.checkpointing)
        args.child.write_text(json.dumps(child(*options, steps=args.steps)))
        return
    if args.quick:
        args.backbone, args.size, args.patch, args.steps, args.settings = "vit_tiny", 32, 8, 1, ["mae"]
    result = run(args)
    for name in args.settings:
        r = result[name]
        print(
            f"{name}: with checkpointing, activations {100 * r['reduction_activations']:.0f} % lower, "
            f"total tensor memory {100 * r['reduction_total']:.0f} % lower (target >= {100 * TARGET:.0f} %)"
        )
    write_results("checkpointing_memory", result, markdown(result), *([args.out] if args.out else []))


if __name__ == "__main__":
    main()
