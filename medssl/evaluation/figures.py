"""Image grids as plain RGB arrays (numpy + PIL, no matplotlib): previews, views, segmentation overlays.

Images follow medssl's layout ``(C, *spatial)``. Two axis orders occur: files are read in ``(x, y[, z])``
order (``medssl.data.readers``), MedMNIST arrays keep numpy's ``(rows, cols)`` / ``(D, H, W)``.
``display_plane`` turns either into an upright 2D picture; 3D shows one slice (the middle one by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

#: Colours of mask classes 1, 2, ... (class 0, the background, is not drawn).
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    dtype=np.uint8,
)
MASKED_COLOUR = (31, 119, 180)  # NaN pixels, e.g. the patches an MAE hid
BACKGROUND = 24
GAP = 2
TEXT_HEIGHT = 14


def as_numpy(image: object) -> np.ndarray:
    """A tensor (CPU, float) or array as a float32 numpy array."""
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu().numpy()
    return np.asarray(image, dtype=np.float32)


def slice_axis(spatial_dims: int, *, file_axes: bool) -> int:
    """The axis of ``(C, *spatial)`` that 3D display slices across: z for files, D for MedMNIST arrays."""
    return 3 if file_axes and spatial_dims == 3 else 1


def display_plane(image: object, *, file_axes: bool = True, index: int | None = None) -> np.ndarray:
    """``(C, *spatial)`` as ``(H, W)`` (one channel) or ``(H, W, 3)`` (three channels) for display.

    3D: the slice ``index`` (default the middle) across ``slice_axis``. File axes are transposed so rows
    run along y; 3D file volumes (RAS after orientation) are also flipped so that anterior is up.
    """
    array = as_numpy(image)
    spatial_dims = array.ndim - 1
    if spatial_dims == 3:
        axis = slice_axis(3, file_axes=file_axes)
        array = np.take(array, array.shape[axis] // 2 if index is None else index, axis=axis)
    elif spatial_dims != 2:
        raise ValueError(f"cannot display an image of shape {array.shape}; expected (C, *spatial), 2D or 3D")
    if file_axes:
        array = np.swapaxes(array, 1, 2)  # (C, x, y) -> (C, rows=y, cols=x)
        if spatial_dims == 3:
            array = array[:, ::-1]
    plane = array[0] if array.shape[0] != 3 else np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(plane)


def to_rgb(plane: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A plane as uint8 RGB, windowed to ``[low, high]`` (default its 0.5-99.5 percentiles); NaN in blue."""
    finite = np.isfinite(plane)
    values = plane[finite]
    if low is None or high is None:
        p_low, p_high = np.percentile(values, (0.5, 99.5)) if values.size else (0.0, 1.0)
        low = float(p_low) if low is None else low
        high = float(p_high) if high is None else high
    scaled = np.clip((np.nan_to_num(plane) - low) / max(high - low, 1e-8), 0.0, 1.0)
    rgb = np.round(scaled * 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    nan = ~finite if finite.ndim == 2 else ~finite.all(axis=-1)
    rgb[nan] = MASKED_COLOUR
    return rgb


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend class colours (``PALETTE``) over ``rgb`` where ``labels`` (same ``(H, W)``) is not 0."""
    labels = np.asarray(labels).astype(np.int64)
    out = rgb.astype(np.float32)
    for value in np.unique(labels[labels > 0]):
        where = labels == value
        colour = PALETTE[(int(value) - 1) % len(PALETTE)].astype(np.float32)
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return np.round(out).astype(np.uint8)


def grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    tile: int = 96,
) -> np.ndarray:
    """Lay out uint8 RGB images (``None`` leaves a cell empty) in a labelled grid; returns ``(H, W, 3)``.

    Each image is scaled to fit a ``tile`` x ``tile`` cell (nearest neighbour when enlarging, so voxels
    stay visible); ``captions[r][c]`` is written above cell (r, c).
    """
    font = ImageFont.load_default()
    num_cols = max((len(r) for r in rows), default=0)
    left = 8 + max((int(font.getlength(label)) for label in row_labels or []), default=0)
    left = left if row_labels else 0
    top = TEXT_HEIGHT if col_labels else 0
    caption = TEXT_HEIGHT if captions else 0
    cell_h = tile + caption
    width = left + num_cols * (tile + GAP) + GAP
    height = top + len(rows) * (cell_h + GAP) + GAP
    canvas = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(col_labels or []):
        x = left + GAP + c * (tile + GAP)
        draw.text((x, 1), _fit(label, tile, font), fill=(230, 230, 230), font=font)
    for r, row in enumerate(rows):
        y = top + GAP + r * (cell_h + GAP)
        if row_labels:
            draw.text((4, y + caption + tile // 2 - 6), row_labels[r], fill=(230, 230, 230), font=font)
        for c, image in enumerate(row):
            x = left + GAP + c * (tile + GAP)
            if captions and c < len(captions[r]):
                draw.text((x, y), _fit(captions[r][c], tile, font), fill=(200, 200, 200), font=font)
            if image is not None:
                canvas.paste(_fit_image(image, tile), (x, y + caption))
    return np.asarray(canvas)


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write ``rgb`` to ``path`` (folders created) through a temporary file: never a half-written PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(rgb).save(partial, format="PNG")
    partial.replace(path)
    return path


def _fit_image(rgb: np.ndarray, tile: int) -> Image.Image:
    image = Image.fromarray(rgb)
    scale = tile / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)


def _fit(text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text``, its start replaced by ``..`` until it fits ``width`` (file names differ at the end)."""
    while len(text) > 3 and font.getlength(text) > width:
        text = ".." + text[3:]
    return text
