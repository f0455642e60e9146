"""Write the weights folder: ``backbone.safetensors`` (+ ``decoder.safetensors``), ``medssl.json``, README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from medssl.export.files import write_atomic, write_json, write_text
from medssl.export.metadata import model_card
from medssl.export.source import Pretrained

ENCODER_FILE = "backbone.safetensors"
DECODER_FILE = "decoder.safetensors"


def write_weights(pretrained: Pretrained, out_dir: str | Path, exports: dict[str, Any] | None = None) -> Path:
    """Write the safetensors, ``medssl.json`` and the model card into ``out_dir``, each file atomically.

    ``decoder.safetensors`` holds only the decoder blocks the method pretrained (none: no file); the decoder
    modules left out are listed in ``medssl.json`` so loaders know to initialise them. ``medssl.json`` lists
    the files and, under ``exports``, the other formats written and their measured differences to PyTorch.
    """
    out = Path(out_dir)
    encoder, decoder, untrained = pretrained.split_state()
    write_atomic(out / ENCODER_FILE, lambda tmp: save_file(encoder, tmp, metadata={"format": "pt"}))
    if pretrained.decoder_pretrained:
        write_atomic(out / DECODER_FILE, lambda tmp: save_file(decoder, tmp, metadata={"format": "pt"}))
    else:
        (out / DECODER_FILE).unlink(missing_ok=True)  # a stale one from an earlier export would mislead
    files = {
        "encoder": ENCODER_FILE,
        "decoder": DECODER_FILE if pretrained.decoder_pretrained else None,
        "decoder_modules": pretrained.decoder_modules,  # pretrained decoder blocks, in decoder.safetensors
        "not_pretrained_modules": sorted({k.split(".")[0] for k in untrained}),  # left out: fresh init
    }
    meta = {**pretrained.meta, "files": files, "exports": exports or {}}
    write_json(out / "medssl.json", meta)
    write_text(out / "README.md", model_card(meta))
    return out
