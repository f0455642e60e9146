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

from medssl.data.content import MaskRules, find_content_problems
from medssl.data.readers import Header, nifti_header, nifti_image, read_header

logger = logging.getLogger("medssl.data")

MAX_REPORT_LINES = 50
#: Voxel spacings (mm) outside this range are reported: a broken header or wrong units.
PLAUSIBLE_SPACING = (1e-3, 100.0)
SKIP_HINT = "Fix these entries or pass --data.skip_bad true to drop them."


@dataclass(frozen=True)
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
    unreadable = _unreadable(path)
    if unreadable:
        return unreadable, None
    try:
        if path.lower().endswith((".nii", ".nii.gz")):
            img = nifti_image(path)
            header, truncation = nifti_header(img), _nifti_truncation(path, img)
        else:
            header, truncation = read_header(path), None
    except Exception as exc:
        message = str(exc) if isinstance(exc, ValueError) else f"not a readable image ({exc})"
        return message.replace(path, os.path.basename(path)), None  # the report line names the path already
    reason = truncation or _dims_reason(header.spatial_shape, header.channels, spatial_dims)
    return reason or _spacing_reason(header.spacing), header


def _unreadable(path: str) -> str | None:
    """Why reading ``path`` fails, or None (a real read: ``os.access`` says yes to root whatever the mode)."""
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except PermissionError:
        return "not readable (permission denied)"
    except OSError as exc:
        return f"not readable ({exc.strerror or exc})"
    return None


def _spacing_reason(spacing: Sequence[float]) -> str | None:
    low, high = PLAUSIBLE_SPACING
    if all(np.isfinite(s) and low <= s <= high for s in spacing):
        return None
    shown = "x".join(f"{s:g}" for s in spacing)
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        return f"has voxel spacing {shown} mm: zero, negative or not a number (a broken header)"
    return f"has voxel spacing {shown} mm, outside {low:g}..{high:g} mm (wrong units in the header?)"


def _affine_reason(image: Header, mask: Header) -> str | None:
    """How the mask's voxel-to-world mapping differs from the image's, or None when they match."""
    if image.affine is None or mask.affine is None or len(image.affine) != len(mask.affine):
        return None
    a, b = np.asarray(image.affine), np.asarray(mask.affine)
    if np.allclose(a, b, rtol=1e-3, atol=1e-3):
        return None
    rank = len(a) - 1

    def fmt(values: np.ndarray) -> str:
        return "x".join(f"{v:g}" for v in values)

    spacing_a, spacing_b = np.linalg.norm(a[:rank, :rank], axis=0), np.linalg.norm(b[:rank, :rank], axis=0)
    if not np.allclose(spacing_a, spacing_b, rtol=1e-3, atol=1e-4):
        what = f"spacing {fmt(spacing_b)} mm vs the image's {fmt(spacing_a)} mm"
    elif not np.allclose(a[:rank, -1], b[:rank, -1], atol=1e-2):
        what = f"origin ({fmt(b[:rank, -1])}) mm vs the image's ({fmt(a[:rank, -1])}) mm"
    else:
        what = "orientation differs from the image's"
    return f"mask is not on the image's voxel grid: {what}"


def _array_problem(array: np.ndarray | torch.Tensor, spatial_dims: int) -> str | None:
    shape = tuple(array.shape)
    if len(shape) != spatial_dims + 1:
        return (
            f"array of shape {_shape(shape)} is not channel-first {spatial_dims}D "
            f"(expected (C, {', '.join('xyz'[:spatial_dims])}) for spatial_dims={spatial_dims})"
        )
    return _dims_reason(shape[1:], shape[0], spatial_dims)


def _item_problems(index: int, item: dict, spatial_dims: int, keys: Sequence[str]) -> list[Problem]:
    problems, shapes, headers = [], {}, {}
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
                shapes[key], headers[key] = header.spatial_shape, header
        if reason:
            problems.append(Problem(where, reason, key))
    image_shape, mask_shape = shapes.get("image"), shapes.get("mask")
    if not problems and image_shape and mask_shape and image_shape != mask_shape:
        reason = f"mask shape {_shape(mask_shape)} does not match image shape {_shape(image_shape)}"
        problems.append(Problem(os.fspath(item["mask"]), reason, "mask"))
    elif not problems and "image" in headers and "mask" in headers:
        reason = _affine_reason(headers["image"], headers["mask"])
        if reason:
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


def find_content(
    items: Sequence[dict], *, keys: Sequence[str], mask_rules: MaskRules | None, skip: set[int]
) -> list[tuple[int, Problem]]:
    """Voxel checks (``medssl.data.content``) of the ``image`` and ``mask`` of items not in ``skip``."""
    jobs = [
        (index, key, item[key])
        for index, item in enumerate(items)
        if index not in skip
        for key in keys
        if key in ("image", "mask") and item.get(key) is not None
    ]
    return [
        (index, Problem(_where(index, items[index], key), reason, key))
        for index, key, reason in find_content_problems(jobs, mask_rules=mask_rules)
    ]


def find_leaks(items: Sequence[dict]) -> list[tuple[int, Problem]]:
    """Patients whose items sit in more than one split: one problem per patient, for all their items."""
    splits: dict[str, dict[str, list[int]]] = {}
    for index, item in enumerate(items):
        if "patient_id" in item and "split" in item:
            splits.setdefault(str(item["patient_id"]), {}).setdefault(item["split"], []).append(index)
    found = []
    for patient, by_split in sorted(splits.items()):
        if len(by_split) < 2:
            continue
        seen = ", ".join(f"{name} ({_name(items[ix[0]])})" for name, ix in sorted(by_split.items()))
        reason = f"is in more than one split: {seen}; a patient's images must all be in one split"
        problem = Problem(f"patient_id {patient}", reason, "")
        found += [(index, problem) for indices in by_split.values() for index in indices]
    return found


def _name(item: dict) -> str:
    image = item.get("image")
    return os.path.basename(os.fspath(image)) if isinstance(image, str | os.PathLike) else "array"


def _where(index: int, item: dict, key: str) -> str:
    value = item.get(key)
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return f"item {index}" + (f" (patient_id {item['patient_id']})" if "patient_id" in item else "")


def check_datalist(
    items: list[dict],
    *,
    spatial_dims: int,
    keys: Sequence[str] = ("image", "mask"),
    skip_bad: bool = False,
    source: object = None,
    content: bool = True,
    mask_rules: MaskRules | None = None,
) -> list[dict]:
    """Return the usable items; raise one DatalistError listing every problem (or drop them if `skip_bad`).

    Header checks for every item, then (``content``) the voxel checks of ``medssl.data.content`` for the
    items whose headers passed (masks against ``mask_rules`` when given), then patient leakage across
    the items' ``split`` values.
    """
    if not items:
        raise DatalistError([Problem(str(source or "datalist"), "no images found")], source)
    found = find_problems(items, spatial_dims=spatial_dims, keys=keys)
    if content:
        header_bad = {index for index, _ in found}
        found += find_content(items, keys=keys, mask_rules=mask_rules, skip=header_bad)
        found.sort(key=lambda pair: pair[0])
    found += find_leaks(items)
    if not found:
        return items
    problems = list(dict.fromkeys(problem for _, problem in found))  # one line per leaked patient
    if not skip_bad:
        raise DatalistError(problems, source, SKIP_HINT)
    bad = {index for index, _ in found}
    good = [item for index, item in enumerate(items) if index not in bad]
    if not good:
        raise DatalistError(problems, source, "No usable item is left.")
    hint = f"Dropped {len(bad)} of {len(items)} items (skip_bad)."
    logger.warning(format_report(problems, source=source, hint=hint))
    return good
