"""``medssl demo``: build the offline demo data (MNI152 anatomy from nilearn) and pretrain SimCLR on it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medssl.recipes_dir import recipes_dir


def run(args: list[str]) -> Path:
    """Run the demo; extra ``--key value`` pairs after the options go to ``medssl pretrain``."""
    parser = argparse.ArgumentParser(prog="medssl demo", description=__doc__)
    parser.add_argument("--out", default=None, help="run directory (default: runs/demo-<time>)")
    parser.add_argument("--data-root", default=None, help="where to build the demo data (default: cache)")
    options, overrides = parser.parse_known_args(args)

    from medssl.commands import pretrain
    from medssl.data.demo import build_demo_dataset

    demo = build_demo_dataset(options.data_root)
    print(f"demo data: {demo.root}")
    out = options.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    return pretrain.run(
        [
            "--config",
            str(recipes_dir() / "demo" / "simclr_demo_2d.yaml"),
            "--data.source",
            str(demo.datalist_2d),
            "--trainer.default_root_dir",
            out,
            *overrides,
        ]
    )
