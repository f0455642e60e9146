"""Write a backbone's weights as safetensors plus the metadata needed to rebuild the plain MONAI network."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

import medssl


def save_backbone(backbone: nn.Module, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``backbone.safetensors`` and ``medssl.json`` into ``out_dir`` atomically; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    monai_class, monai_kwargs = backbone.monai_spec()  # type: ignore[operator]
    meta = {
        "medssl_version": medssl.__version__,
        "backbone": backbone.name,
        "spatial_dims": backbone.spatial_dims,
        "in_channels": backbone.in_channels,
        "num_features": backbone.num_features,
        "monai_class": monai_class,
        "monai_kwargs": monai_kwargs,
        **metadata,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    _atomic(out / "backbone.safetensors", lambda p: save_file(state, p))
    _atomic(out / "medssl.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2, default=str)))
    return out


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
