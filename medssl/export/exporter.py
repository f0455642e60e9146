"""``export``: a pretrained backbone to safetensors + metadata and, on request, TorchScript, ONNX, bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl.export.backbone import write_weights
from medssl.export.files import ExportError
from medssl.export.formats import (
    ONNX_OPSET,
    export_bundle,
    export_onnx,
    export_torchscript,
    exported_network,
)
from medssl.export.source import open_pretrained

FORMATS = ("safetensors", "torchscript", "onnx", "bundle")


def export(
    source: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = ("safetensors",),
    decoder: bool | None = None,
) -> dict[str, Any]:
    """Export the backbone of a run dir, checkpoint or export dir into ``out``; returns the ``exports`` dict.

    ``safetensors`` (+ ``medssl.json`` and the model card) is always written, last, so the folder is only
    complete once every requested format has passed its check. ``decoder`` forces the decoder export on or
    off; by default it follows the method (``pretrains_decoder``).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    pretrained = open_pretrained(source, decoder=decoder)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    output = exported_network(pretrained)[1]
    exports: dict[str, Any] = {}
    if "torchscript" in formats:
        diff = export_torchscript(pretrained, folder / "model.ts")
        exports["torchscript"] = {"file": "model.ts", "output": output, "max_abs_diff": diff}
    if "onnx" in formats:
        diff = export_onnx(pretrained, folder / "model.onnx")
        exports["onnx"] = {"file": "model.onnx", "output": output, "opset": ONNX_OPSET, "max_abs_diff": diff}
    if "bundle" in formats:
        export_bundle(pretrained, folder / "bundle")
        exports["bundle"] = {"folder": "bundle", "checked": "monai.bundle.ConfigParser + strict load"}
    write_weights(pretrained, folder, exports)
    return exports
