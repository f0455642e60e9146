"""Cheap up-front checks of a datalist, reported all at once before any training starts."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medssl.data.readers import Header, nifti_header, nifti_image, read_header

logger = logging.getLogger("medssl.data")

MAX_REPORT_LINES = 50
SKIP_HINT = "Fix these entries or pass --data.skip_bad true to drop them."


@dataclass
class Problem:
    """One bad entry: which file (or item), which item key ("" for the datalist itself), and what is wrong."""

    path: str
    reason: str
    key: str = "image"

    def __str__(self) -> str:
        where = self.path if self.key in ("", "image") else f"{self.path} ({self.key})"
        return f"- {where}: {self.reason}"


def format_report(problems: Sequence[Problem], *, source: object = None, hint: str = "") -> str:
    """A heading with the count, one line per problem (capped), then the hint."""
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    heading = f"{count} in the datalist" + (f" {source}" if source is not None else "") + ":"
    lines = [heading, *(str(p) for p in problems[:MAX_REPORT_LINES])]
    if len(problems) > MAX_REPORT_LINES:
        lines.append(f"... and {len(problems) - MAX_REPORT_LINES} more")
    if hint:
        lines.append(hint)
    return "\n".join(lines)


class DatalistError(ValueError):
    """A datalist that cannot be used; `problems` lists every bad entry, `str()` is the readable report."""

    def __init__(self, problems: list[Problem], source: object = None, hint: str = "") -> None:
        self.problems, self.source, self.hint = problems, source, hint
        super().__init__(format_report(problems, source=source, hint=hint))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problems, self.source, self.hint)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _dims_reason(shape: Sequence[int], channels: int, spatial_dims: int) -> str | None:
    if any(s == 0 for s in shape):
        return f"is empty (shape {_shape(shape)})"
    if len(shape) == spatial_dims:
        return None
    colour = f", {channels} channels" if channels > 1 else ""
    return (
        f"is {len(shape)}D (shape {_shape(shape)}{colour}) "
        f"but this run is {spatial_dims}D (spatial_dims={spatial_dims})"
    )


def _nifti_truncation(path: str, img: nib.Nifti1Image) -> str | None:
    """Compare the data size the NIfTI header promises with what the file (or gzip trailer) holds."""
    offset = int(getattr(img.dataobj, "offset", 0))  # the offset nibabel reads from (vox_offset 0 means 352)
    expected = offset + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    if path.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", f.read(4))
        # ISIZE is the uncompressed size mod 2^32; 0 is what a trailing empty (BGZF) block records.
        if isize not in (0, expected % 2**32):
            return (
                f"truncated or corrupt file: header says {expected:,} bytes of data, "
                f"the gzip trailer records {isize:,}"
            )
        return None
    size = os.path.getsize(path)
    if size < expected:
        return f"truncated file: header says {expected:,} bytes of data, file holds {size:,}"
    return None


def _path_problem(path: str, spatial_dims: int) -> tuple[str | None, Header | None]:
    """The reason `path` is unusable (or None), and its header when readable."""
    if not os.path.exists(path):
        return "file not found", None
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        return "not readable (permission denied)", None
    try:
        if path.lower().endswith((".nii", ".nii.gz")):
            img = nifti_image(path)
            header, truncation = nifti_header(img), _nifti_truncation(path, img)
        else:
            header, truncation = read_header(path), None
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"not a readable image ({exc})"
        return reason.replace(path, os.path.basename(path)), None  # the report line names the path already
    return truncation or _dims_reason(header.spatial_shape, header.channels, spatial_dims), header


def _array_problem(array: np.ndarray | torch.Tensor, spatial_dims: int) -> str | None:
    shape = tuple(array.shape)
    if len(shape) != spatial_dims + 1:
        return (
            f"array of shape {_shape(shape)} is not channel-first {spatial_dims}D "
            f"(expected (C, {', '.join('xyz'[:spatial_dims])}) for spatial_dims={spatial_dims})"
        )
    return _dims_reason(shape[1:], shape[0], spatial_dims)


def _item_problems(index: int, item: dict, spatial_dims: int, keys: Sequence[str]) -> list[Problem]:
    problems, shapes = [], {}
    for key in keys:
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, np.ndarray | torch.Tensor):
            where = f"item {index}" + (f" (patient_id {item['patient_id']})" if "patient_id" in item else "")
            reason = _array_problem(value, spatial_dims)
            shapes[key] = tuple(value.shape[1:])
        else:
            where = os.fspath(value)
            reason, header = _path_problem(where, spatial_dims)
            if header is not None:
                shapes[key] = header.spatial_shape
        if reason:
            problems.append(Problem(where, reason, key))
    image_shape, mask_shape = shapes.get("image"), shapes.get("mask")
    if not problems and image_shape and mask_shape and image_shape != mask_shape:
        reason = f"mask shape {_shape(mask_shape)} does not match image shape {_shape(image_shape)}"
        problems.append(Problem(os.fspath(item["mask"]), reason, "mask"))
    return problems


def find_problems(
    items: Sequence[dict], *, spatial_dims: int, keys: Sequence[str] = ("image", "mask")
) -> list[tuple[int, Problem]]:
    """Cheap checks (headers only) of every item; returns (item index, problem) pairs."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return [
        (index, problem)
        for index, item in enumerate(items)
        for problem in _item_problems(index, item, spatial_dims, keys)
    ]


def check_datalist(
    items: list[dict],
    *,
    spatial_dims: int,
    keys: Sequence[str] = ("image", "mask"),
    skip_bad: bool = False,
    source: object = None,
) -> list[dict]:
    """Return the usable items; raise one DatalistError listing every problem (or drop them if `skip_bad`)."""
    if not items:
        raise DatalistError([Problem(str(source or "datalist"), "no images found")], source)
    found = find_problems(items, spatial_dims=spatial_dims, keys=keys)
    if not found:
        return items
    problems = [problem for _, problem in found]
    if not skip_bad:
        raise DatalistError(problems, source, SKIP_HINT)
    bad = {index for index, _ in found}
    good = [item for index, item in enumerate(items) if index not in bad]
    if not good:
        raise DatalistError(problems, source, "No usable item is left.")
    hint = f"Dropped {len(bad)} of {len(items)} items (skip_bad)."
    logger.warning(format_report(problems, source=source, hint=hint))
    return good
