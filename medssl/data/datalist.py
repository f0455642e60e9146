"""Turn a folder, CSV, JSON / Decathlon `dataset.json` or MedMNIST `.npz` into a list of items.

An item is a dict: `"image"` (absolute path, or for MedMNIST a channel-first ndarray `(C, *spatial)`) and
optionally `"label"` (int, list of ints for multi-label, or str), `"mask"` (path), `"patient_id"`, `"split"`
(train / val / test) and `"position"` (a float in [0, 1]: where a slice or patch lies in its volume, used by
position-aware contrastive methods such as JCL).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.readers import IMAGE_SUFFIXES, has_suffix
from medssl.data.validation import DatalistError, Problem

Item = dict[str, Any]

logger = logging.getLogger("medssl.data")

ITEM_KEYS = ("image", "label", "mask", "patient_id", "split", "position")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val", "testing": "test"}
# Sub-folders a folder scan leaves out: annotations are given through a CSV, JSON or dataset.json.
MASK_FOLDERS = frozenset(
    {"label", "labels", "labelstr", "labelsts", "mask", "masks", "seg", "segmentation", "segmentations", "gt"}
)
_DICOM_MAGIC_OFFSET = 128


def load_datalist(source: str | os.PathLike) -> list[Item]:
    """Load items from a folder, a `.csv`, a `.json` (datalist or Decathlon) or a MedMNIST `.npz`.

    A folder is scanned recursively (sorted; hidden files and annotation sub-folders such as `labels/`
    or `masks/` left out); a folder of DICOM files is one item. In CSV and JSON, relative paths are
    resolved against the file's folder, columns other than the item keys are ignored, and a `label`
    that is an image path is taken as the `mask`. Raises `DatalistError` naming the file on bad input.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise _error(path, "not found; expected a folder, a .csv, a .json or a MedMNIST .npz")
    if path.is_dir():
        if (path / "dataset.json").is_file():
            return _from_json(path / "dataset.json")
        return _from_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_csv(path)
    if suffix == ".json":
        return _from_json(path)
    if suffix == ".npz":
        return _from_npz(path)
    raise _error(
        path, f"unsupported datalist '{suffix or path.name}'; expected a folder, .csv, .json or .npz"
    )


def describe_source(source: str | os.PathLike, items: list[Item] | None = None) -> str:
    """Short description for logs, e.g. `"csv /data/list.csv: 120 items (train 100, val 20)"`."""
    path = Path(source)
    kind = "folder" if path.is_dir() else path.suffix.lstrip(".").lower() or "file"
    items = load_datalist(path) if items is None else items
    splits = sorted({item["split"] for item in items if "split" in item})
    per_split = ", ".join(f"{s} {sum(item.get('split') == s for item in items)}" for s in splits)
    return f"{kind} {path}: {len(items)} items" + (f" ({per_split})" if per_split else "")


def _error(path: Path, reason: str) -> DatalistError:
    return DatalistError([Problem(str(path), reason, key="")])


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix or path.name.upper() == "DICOMDIR":  # DICOMDIR indexes a media, it is not a slice
        return False
    try:
        with open(path, "rb") as f:
            f.seek(_DICOM_MAGIC_OFFSET)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _scan(folder: Path, root: Path) -> Iterator[str]:
    """Image files and DICOM series folders under `folder`, sorted, depth first.

    A folder that cannot be listed is yielded itself: the datalist checks then report it as unreadable.
    """
    try:
        entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    except OSError:
        yield str(folder)
        return
    files = [e for e in entries if e.is_file()]
    if any(_is_dicom_file(f) for f in files):
        yield str(folder)
    yield from (str(f) for f in files if has_suffix(f.name, IMAGE_SUFFIXES) and f.suffix.lower() != ".dcm")
    for sub in (e for e in entries if e.is_dir()):
        if sub.name.lower() in MASK_FOLDERS:
            logger.info("folder scan of %s: skipping the annotation folder %s", root, sub)
            continue
        yield from _scan(sub, root)


def _from_folder(folder: Path) -> list[Item]:
    folder = folder.absolute()
    items = [{"image": image} for image in _scan(folder, folder)]
    if not items:
        supported = ", ".join(IMAGE_SUFFIXES)
        raise _error(folder, f"no images found; expected files ({supported}) or DICOM series folders")
    return items


def _parse_label(value: Any) -> int | list[int] | str:
    """Ints stay ints, numeric strings become ints, `"0;2"` becomes `[0, 2]`, anything else stays a str."""
    if isinstance(value, bool | float) or not isinstance(value, int | str | list):
        raise ValueError(f"label {value!r} is not an int, a list of ints or a string")
    if isinstance(value, int | list):
        return value
    parts = [p.strip() for p in value.split(";")]
    if all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts] if len(parts) > 1 else int(parts[0])
    return value.strip()


def _parse_position(value: Any) -> float:
    position = float(value)
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"position {value!r} must be a normalised position in [0, 1]")
    return position


def _normalise(raw: dict[str, Any], base: Path, split: str | None = None) -> Item:
    """Resolve paths against `base`, parse labels, map a label that is an image path to `"mask"`."""
    item = {k: v for k, v in raw.items() if k in ITEM_KEYS and v not in (None, "")}
    if not isinstance(item.get("image"), str):
        raise ValueError(f"entry {raw!r} has no 'image' path")
    label = item.pop("label", None)
    if isinstance(label, str) and has_suffix(label, IMAGE_SUFFIXES):
        item.setdefault("mask", label)
    elif label is not None:
        item["label"] = _parse_label(label)
    for key in ("image", "mask"):
        if key in item:
            item[key] = os.path.abspath(base / Path(item[key]).expanduser())
    if "patient_id" in item:
        item["patient_id"] = str(item["patient_id"])
    if "position" in item:
        item["position"] = _parse_position(item["position"])
    item_split = str(item.get("split", split or "")).strip().lower()
    if item_split:
        item_split = _SPLIT_ALIASES.get(item_split, item_split)
        if item_split not in SPLITS:
            raise ValueError(f"split {item['split']!r} is not one of {', '.join(SPLITS)}")
        item["split"] = item_split
    return item


def _from_csv(path: Path) -> list[Item]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _error(path, f"not a readable CSV ({exc})") from exc
    if not columns:
        raise _error(path, "empty file; expected a header row with an 'image' column, then one row per image")
    if "image" not in columns:
        raise _error(path, f"no 'image' column; found columns: {', '.join(columns)}")
    if not rows:
        raise _error(path, "no rows; expected one image per row under the 'image' column")
    items, problems = [], []
    for line, row in enumerate(rows, start=2):
        raw = {
            k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)
        }
        try:
            items.append(_normalise(raw, path.parent))
        except ValueError as exc:
            problems.append(Problem(f"{path}:{line}", str(exc), key=""))
    if problems:
        raise DatalistError(problems)
    return items


def _is_decathlon(data: Any) -> bool:
    return isinstance(data, dict) and "training" in data and ("modality" in data or "labels" in data)


def _sections(data: Any) -> list[tuple[str | None, Any]]:
    if _is_decathlon(data):
        return [("train", data["training"]), ("test", data.get("test", []))]
    if isinstance(data, list):
        return [(None, data)]
    if isinstance(data, dict) and any(k in data for k in ("training", "validation", "test")):
        return [
            (s, data.get(k, [])) for k, s in (("training", "train"), ("validation", "val"), ("test", "test"))
        ]
    raise ValueError(
        "expected a list of items, a dict with 'training'/'validation'/'test' lists, or a Decathlon "
        f"dataset.json; found a {type(data).__name__}"
        + (f" with keys {', '.join(map(str, data))}" if isinstance(data, dict) else "")
    )


def _from_json(path: Path) -> list[Item]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        sections = _sections(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise _error(path, f"not a usable JSON datalist ({exc})") from exc
    items, problems = [], []
    for split, entries in sections:
        for index, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            try:
                items.append(
                    _normalise({"image": entry} if isinstance(entry, str) else entry, path.parent, split)
                )
            except (ValueError, TypeError, AttributeError) as exc:
                problems.append(Problem(f"{path} [{split or 'items'}][{index}]", str(exc), key=""))
    if problems:
        raise DatalistError(problems)
    if not items:
        raise _error(path, "no items; expected at least one entry with an 'image'")
    return items


def _channel_first(images: np.ndarray) -> np.ndarray:
    """MedMNIST `(N, H, W)`, `(N, H, W, 3)` or `(N, D, H, W)` as views `(N, C, *spatial)`."""
    if images.ndim == 4 and images.shape[-1] == 3:
        return np.moveaxis(images, -1, 1)
    if images.ndim in (3, 4):
        return images[:, None]
    raise ValueError(f"images of shape {images.shape}; expected (N,H,W), (N,H,W,3) or (N,D,H,W)")


def _from_npz(path: Path) -> list[Item]:
    if not zipfile.is_zipfile(path):
        raise _error(path, "not a readable .npz (not a zip archive)")
    try:
        with np.load(path, mmap_mode=None, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise _error(path, f"not a readable .npz ({exc})") from exc
    found = [s for s in SPLITS if f"{s}_images" in arrays]
    if not found:
        expected = ", ".join(f"{s}_images" for s in SPLITS)
        raise _error(
            path, f"not a MedMNIST file: expected keys {expected}; found {', '.join(arrays) or 'none'}"
        )
    items: list[Item] = []
    for split in found:
        try:
            images = _channel_first(arrays[f"{split}_images"])
        except ValueError as exc:
            raise _error(path, f"{split}_images: {exc}") from exc
        labels = arrays.get(f"{split}_labels")
        label_list = None if labels is None else labels.reshape(len(labels), -1).tolist()
        for index in range(len(images)):
            item: Item = {"image": images[index], "split": split, "patient_id": f"{split}-{index}"}
            if label_list is not None:
                row = label_list[index]
                item["label"] = [int(v) for v in row] if len(row) > 1 else int(row[0])
            items.append(item)
    if not items:
        raise _error(path, "no images; every *_images array is empty")
    return items
