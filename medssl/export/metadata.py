"""What goes into ``medssl.json`` and the model card: settings, hashes and versions, never patient data.

Only names, sizes, hashes and hyper-parameters are recorded. Paths are reduced to a dataset name (the last
meaningful component of the data source), so no absolute path and no DICOM header value is written.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import medssl

FORMAT = "medssl-export/1"
_GENERIC_FOLDERS = {"images", "imagestr", "imagests", "image", "data", "train", "training", "dicom"}
_PACKAGES = ("torch", "monai", "pytorch-lightning", "lightly", "safetensors", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of Python, medssl and the libraries that define the weights' meaning."""
    versions = {"python": platform.python_version(), "medssl": medssl.__version__}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or ``"unknown"`` when it does not exist."""
    if not path.is_file():
        return "unknown"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_sha256(images: Iterable[Any]) -> str:
    """sha256 over the sorted (file name, size) of the training images (arrays: their content hash)."""
    entries = sorted(_manifest_entry(i, image) for i, image in enumerate(images))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _manifest_entry(index: int, image: Any) -> tuple[str, str]:
    if isinstance(image, str | Path):
        path = Path(image)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        size = sum(p.stat().st_size for p in files if p.exists())
        return path.name, str(size)
    data = getattr(image, "tobytes", lambda: repr(image).encode())()
    return f"#{index}", hashlib.sha256(data).hexdigest()


def dataset_name(source: str | None) -> str:
    """A data source reduced to a name: ``.../pneumoniamnist.npz`` -> ``pneumoniamnist``."""
    if not source:
        return "unknown"
    parts = [p for p in Path(str(source)).parts if p not in ("/", "\\") and not p.startswith("$")]
    while len(parts) > 1 and Path(parts[-1]).stem.lower() in _GENERIC_FOLDERS:
        parts.pop()
    return Path(parts[-1]).stem if parts else "unknown"


def data_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessing a user must repeat at fine-tuning time (from the DataModule or config.yaml)."""
    spacing, size = data.get("spacing"), data.get("spatial_size")
    return {
        "dataset": dataset_name(data.get("source")),
        "intensity": data.get("intensity", "unknown"),
        "ct_window": data.get("ct_window") if data.get("intensity") == "ct" else None,
        "spacing": [float(s) for s in spacing] if spacing else None,
        "spatial_size": [int(s) for s in size] if size else None,
    }


def view_size(hparams: Mapping[str, Any]) -> Any:
    """The size of the views the backbone saw during pretraining, when the method records one."""
    augment = hparams.get("augment")
    size = augment.get("size") if isinstance(augment, Mapping) else getattr(augment, "size", None)
    return list(size) if isinstance(size, list | tuple) else size


def model_card(meta: Mapping[str, Any]) -> str:
    """A short ``README.md``: what the weights are, what they were trained on, how to load them."""
    data = meta.get("data", {})
    files = meta["files"]
    decoder = files.get("decoder")
    state = '{**load_file("backbone.safetensors"), **load_file("decoder.safetensors")}'
    load_plain = state if decoder else 'load_file("backbone.safetensors")'
    fresh = files.get("not_pretrained_modules") or []
    strict = f"False  # not pretrained: {', '.join(fresh)}" if fresh else "True"
    module, cls = meta["monai_class"].rsplit(".", 1)
    return f"""# {meta["method"]} / {meta["backbone"]} ({meta["spatial_dims"]}D) pretrained with medssl

- method: {meta["method"]}, backbone: {meta["backbone"]} (MONAI `{meta["monai_class"]}`), \
{meta["in_channels"]} input channel(s), {meta["num_features"]} features
- trained on: {data.get("dataset", "unknown")} (intensity preset {data.get("intensity", "unknown")}, \
spacing {data.get("spacing")}, view size {meta.get("view_size")}), {meta.get("global_step")} steps
- pretrained decoder blocks: {", ".join(files.get("decoder_modules") or []) or "none"}
- recipe sha256 {meta["recipe_sha256"]}, data manifest sha256 {meta["data_manifest_sha256"]}

## Load with medssl

```python
from medssl import load_pretrained

net, report = load_pretrained("path/to/this/folder")  # a plain {meta["monai_class"]}
print(report)
```

## Load with MONAI only

```python
import json
from safetensors.torch import load_file
from {module} import {cls}

meta = json.load(open("medssl.json"))
net = {cls}(**meta["monai_kwargs"])
net.load_state_dict({load_plain}, strict={strict})
```
"""
