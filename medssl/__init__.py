"""medssl: self-supervised pretraining for 2D and 3D medical images.

The public API is imported lazily so that ``medssl --version`` and ``medssl --help`` stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "build_backbone": "medssl.backbones",
    "list_backbones": "medssl.backbones",
    "list_methods": "medssl.methods",
    "load_datalist": "medssl.data",
    "PretrainDataModule": "medssl.data.datamodule",
    "build_demo_dataset": "medssl.data.demo",
    "load_pretrained": "medssl.export",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'medssl' has no attribute {name!r}")
