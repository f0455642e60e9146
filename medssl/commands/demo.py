"""``medssl demo``: the whole story offline on real anatomy (MNI152 brain template shipped with nilearn).

1. pretrain SimCLR on the demo's 2D brain slices (no labels read);
2. fine-tune tissue segmentation (CSF / grey / white matter) with 10 % and 100 % of the labelled slices,
   from the pretrained weights and from scratch, and print the comparison table;
3. export the pretrained backbone (safetensors + medssl.json, TorchScript, and ONNX when installed);
4. load the export back into the plain MONAI network and run it on a slice.

Extra ``--key value`` options go to ``medssl pretrain``, e.g. ``medssl demo --trainer.max_epochs 20``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from medssl.recipes_dir import recipes_dir

#: ``--quick``: the same steps on tiny settings (the test suite runs this).
QUICK_PRETRAIN = ["--trainer.max_steps", "2", "--data.limit", "48", "--data.batch_size", "8"]
QUICK_FINETUNE = ["--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1", "--data.limit", "40"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medssl demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="demo folder (default: runs/demo-<time>)")
    parser.add_argument("--data-root", default=None, help="where to build the demo data (default: cache)")
    parser.add_argument("--label-fractions", nargs="+", type=float, default=[0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks the steps, not the result"
    )
    return parser


def run(args: list[str]) -> Path:
    """Run the demo; returns its folder."""
    from medssl.commands import compare, export, pretrain
    from medssl.data.demo import build_demo_dataset

    options, pretrain_overrides = build_parser().parse_known_args(args)
    started = time.monotonic()
    demo = build_demo_dataset(options.data_root)
    print(f"demo data: {demo.root}")
    out = Path(options.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    quick_pretrain, quick_finetune = (QUICK_PRETRAIN, QUICK_FINETUNE) if options.quick else ([], [])

    _step(1, "self-supervised pretraining (SimCLR, ResNet-18 / 2, 2D slices, no labels)")
    run_dir = pretrain.run(
        [
            "--config", str(recipes_dir() / "demo" / "simclr_demo_2d.yaml"),
            "--data.source", str(demo.datalist_2d),
            "--trainer.default_root_dir", str(out / "pretrain"),
            *quick_pretrain,
            *pretrain_overrides,
        ]
    )  # fmt: skip

    _step(2, "tissue segmentation with few labels: pretrained vs scratch")
    comparison = compare.run(
        [
            "--config", str(recipes_dir() / "demo" / "seg_demo_2d.yaml"),
            "--pretrained", f"simclr={run_dir}",
            "--label-fractions", *map(str, options.label_fractions),
            "--seeds", *map(str, options.seeds),
            "--out", str(out / "compare"),
            "--data.source", str(demo.datalist_2d),
            *quick_finetune,
        ]
    )  # fmt: skip

    _step(3, "export for other tools")
    formats = "safetensors,torchscript" + (",onnx" if _has("onnx") and _has("onnxruntime") else "")
    exported = export.run([str(run_dir), "--out", str(out / "export"), "--format", formats])

    _step(4, "load the export into the plain MONAI network")
    _load_back(exported, demo.datalist_2d)

    minutes = (time.monotonic() - started) / 60
    print(f"\ndemo finished in {minutes:.1f} min; everything is in {out.resolve()}:")
    print(f"  pretraining run:   {run_dir.resolve()}  (metrics.csv, checkpoints/, weights/)")
    print(f"  comparison:        {(comparison / 'compare.md').resolve()}  (+ compare.png, compare.json)")
    print(f"  exported weights:  {exported.resolve()}  (backbone.safetensors, medssl.json, model.ts, ...)")
    return out


def _load_back(export_dir: Path, datalist: Path) -> None:
    import csv

    import numpy as np
    import torch
    from PIL import Image

    from medssl import load_pretrained

    net, report = load_pretrained(export_dir)
    first = next(csv.DictReader(datalist.open()))["image"]
    image = np.asarray(Image.open(datalist.parent / first), dtype=np.float32) / 255.0
    with torch.no_grad():
        output = net(torch.from_numpy(image)[None, None])
    name = f"{type(net).__module__}.{type(net).__name__}"
    print(f"loaded {len(report.loaded)} tensors into {name} (missing {len(report.missing)})")
    print(f"  net(slice {Path(first).name}) -> output of shape {tuple(output.shape)}")
    print("  in your code:  from medssl import load_pretrained;  net, report = load_pretrained(")
    print(f"                    {str(export_dir.resolve())!r})")


def _step(number: int, title: str) -> None:
    print(f"\n=== medssl demo, step {number}/4: {title} ===", flush=True)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
