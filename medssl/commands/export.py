"""``medssl export``: a run dir or checkpoint to safetensors + metadata (+ TorchScript, ONNX, bundle)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medssl.export import FORMATS, export

_DECODER = {"auto": None, "always": True, "never": False}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl export",
        description="Export pretrained weights that other tools load. Checkpoints are read with "
        "torch.load(weights_only=True) only.",
    )
    parser.add_argument(
        "source", help="run folder (checkpoints/last.ckpt + config.yaml), checkpoint or export"
    )
    parser.add_argument("--out", required=True, help="export folder to write (created if needed)")
    parser.add_argument(
        "--format",
        default="safetensors",
        help=f"comma-separated, from {','.join(FORMATS)}; safetensors + medssl.json are always written",
    )
    parser.add_argument(
        "--decoder",
        choices=list(_DECODER),
        default="auto",
        help="export the decoder of an encoder-decoder backbone: auto = when the method pretrains it",
    )
    return parser


def run(args: list[str]) -> Path:
    """Run the export; an ``ExportError`` reaches ``medssl.cli`` as a one-line user error."""
    parser = build_parser()
    options = parser.parse_args(args)
    formats = [f.strip() for f in options.format.split(",") if f.strip()]
    out = Path(options.out)
    exports = export(options.source, out, formats=formats, decoder=_DECODER[options.decoder])
    print(f"export folder: {out.resolve()}")
    for name, record in exports.items():
        diff = record.get("max_abs_diff")
        check = f"max abs diff to PyTorch {diff:.2e}" if diff is not None else record["checked"]
        print(f"  {name}: {record.get('file') or record.get('folder')} ({check})")
    return out
