"""MAE efficiency: a training step with the encoder on the visible patches only vs on all patches.

One process, fixed threads, variants timed round-robin (so a change of machine load hits all of them), median
of ``--repeats`` after ``--warmup`` steps. A step is forward + backward + AdamW step. Variants, all ViT-Tiny
2D (hidden 192, 12 layers, 3 heads), 64 px, patch 8 (64 tokens), batch 64, decoder 128 wide, 2 blocks:

- ``medssl_mae``: ``medssl.methods.mae.MAE`` with mask ratio 0.75 (encoder sees 16 of 64 patches);
- ``medssl_all_patches``: the same model with mask ratio 0 (encoder and decoder on all 64 patches);
- ``monai_mae`` / ``monai_all_patches``: MONAI's ``MaskedAutoEncoderViT`` at the same settings (the same
  masked-patch loss), as a reference ratio.

Run: ``.venv/bin/python benchmarks/mae_efficiency.py`` (about 1-2 minutes on 2 cores); writes
``benchmarks/results/mae_efficiency.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import monai
import torch
from monai.networks.nets import MaskedAutoEncoderViT

from medssl.methods.mae import MAE, masked_patch_mse
from medssl.ops.patches import patchify

SIZE, PATCH, BATCH, RATIO = 64, 8, 64, 0.75
VIT = {"hidden_size": 192, "num_layers": 12, "num_heads": 3, "mlp_dim": 768}
DECODER = {"dim": 128, "depth": 2, "heads": 4}
TARGET = 0.40


def medssl_step(mask_ratio: float) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = MAE(
        backbone="vit_tiny",
        backbone_kwargs={"img_size": SIZE, "patch_size": PATCH, **VIT},
        spatial_dims=2,
        mask_ratio=mask_ratio,
        decoder_dim=DECODER["dim"],
        decoder_depth=DECODER["depth"],
        decoder_heads=DECODER["heads"],
        save_reconstructions=False,
    )
    return _trainable(model, lambda x: model.compute_loss({"view_0": x})["loss"])


def monai_step(mask_ratio: float) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = MaskedAutoEncoderViT(
        in_channels=1,
        img_size=SIZE,
        patch_size=PATCH,
        spatial_dims=2,
        masking_ratio=RATIO,
        decoder_hidden_size=DECODER["dim"],
        decoder_mlp_dim=4 * DECODER["dim"],
        decoder_num_layers=DECODER["depth"],
        decoder_num_heads=DECODER["heads"],
        hidden_size=VIT["hidden_size"],
        mlp_dim=VIT["mlp_dim"],
        num_layers=VIT["num_layers"],
        num_heads=VIT["num_heads"],
    )

    def loss(x: torch.Tensor) -> torch.Tensor:
        pred, mask = model(x, masking_ratio=mask_ratio)  # (B, L, P), (B, L)
        weights = mask.float() if mask_ratio > 0 else torch.ones_like(mask, dtype=torch.float32)
        return masked_patch_mse(pred, patchify(x, (PATCH, PATCH)), weights)

    return _trainable(model, loss)


def _trainable(
    model: torch.nn.Module, loss: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(x: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        value = loss(x)
        value.backward()
        optimizer.step()
        return value.detach()

    return step


def run(repeats: int, warmup: int) -> dict:
    steps = {
        "medssl_mae": medssl_step(RATIO),
        "medssl_all_patches": medssl_step(0.0),
        "monai_mae": monai_step(RATIO),
        "monai_all_patches": monai_step(0.0),
    }
    x = torch.rand(BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in steps}
    load_before = os.getloadavg()
    for i in range(warmup + repeats):
        for name, step in steps.items():  # round-robin: load changes hit every variant alike
            start = time.perf_counter()
            step(x)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "settings": {
            "img_size": SIZE,
            "patch_size": PATCH,
            "tokens": (SIZE // PATCH) ** 2,
            "batch": BATCH,
            "mask_ratio": RATIO,
            "encoder": {"name": "vit_tiny", **VIT},
            "decoder": DECODER,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "warmup": warmup,
        },
        "versions": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
        },
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "seconds": times,
        "median_seconds": medians,
        "spread": {name: (max(t) - min(t)) / statistics.median(t) for name, t in times.items()},
        "ratio_medssl": medians["medssl_mae"] / medians["medssl_all_patches"],
        "ratio_medssl_of_minimums": min(times["medssl_mae"]) / min(times["medssl_all_patches"]),
        "ratio_monai": medians["monai_mae"] / medians["monai_all_patches"],
        "target_ratio": TARGET,
    }


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# MAE efficiency: encoder on visible patches only",
        "",
        f"ViT-Tiny 2D, {s['img_size']} px, patch {s['patch_size']} ({s['tokens']} tokens), "
        f"batch {s['batch']}, "
        f"mask ratio {s['mask_ratio']}, decoder {s['decoder']['dim']} wide x {s['decoder']['depth']} blocks; "
        f"one training step (forward + backward + AdamW), {s['threads']} threads, median of {s['repeats']} "
        f"after {s['warmup']} warm-up steps, variants timed round-robin in one process. "
        f"torch {result['versions']['torch']}, MONAI {result['versions']['monai']}. "
        f"1-min load average {result['load_average_1min']['before']:.1f} before, "
        f"{result['load_average_1min']['after']:.1f} after (shared machine).",
        "",
        "| variant | median step (s) | min (s) | max (s) | (max - min) / median |",
        "|---|---|---|---|---|",
    ]
    for name, times in result["seconds"].items():
        lines.append(
            f"| {name} | {result['median_seconds'][name]:.3f} | {min(times):.3f} | {max(times):.3f} "
            f"| {result['spread'][name]:.2f} |"
        )
    verdict = "meets" if result["ratio_medssl"] <= result["target_ratio"] else "misses"
    lines += [
        "",
        f"- medssl MAE / all patches: **{result['ratio_medssl']:.3f}** (ratio of minimums "
        f"{result['ratio_medssl_of_minimums']:.3f}); {verdict} the target <= {result['target_ratio']:.2f}.",
        f"- MONAI `MaskedAutoEncoderViT` masked / all patches: {result['ratio_monai']:.3f} (reference).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.repeats, args.warmup)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mae_efficiency.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "mae_efficiency.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
