"""The embedded demo dataset: 2D slices and 3D patches of real brain anatomy, built offline.

The source is the MNI152 ICBM 2009a symmetric T1 template and its grey/white-matter probability maps, which
nilearn ships inside its wheel (``nilearn/datasets/data``). Nothing is downloaded: the files are read with
nibabel straight from the installed package, so the build works on machines with no internet.

Layout under ``<root>/demo-v1`` (paths in the CSVs are relative to the CSV's folder)::

    2d/images/{axial,coronal,sagittal}_NNN.png   64x64 uint8 greyscale, 3 mm pixels, 2 mm slice step
    2d/masks/<same name>.png                      64x64 uint8 tissue labels (below)
    2d/datalist.csv                               image,label,mask,patient_id,split
    3d/images/patch_NNN.nii.gz                    32^3 float32 in [0, 1], 2 mm isotropic, MNI affine
    3d/masks/patch_NNN.nii.gz                     32^3 uint8 tissue labels
    3d/datalist.csv                               image,label,mask,patient_id,split
    manifest.json                                 written last: its presence marks a complete build

Tissue labels (masks, 2D and 3D): 0 background (outside the brain mask), 1 CSF / other brain, 2 grey
matter, 3 white matter. The brain mask is the template above 20 % of its maximum (nilearn's own
``load_mni152_brain_mask`` threshold); inside it the label is the argmax of (1 - p_gm - p_wm, p_gm, p_wm),
computed on probabilities averaged over each output pixel/voxel.

Image-level labels:

- 2D ``label`` = slice orientation: 0 axial, 1 coronal, 2 sagittal. ``patient_id`` = a 16 mm slab of
  consecutive slices of one orientation (``axial-03``), so neighbouring, near-identical slices never
  straddle a split.
- 3D ``label`` = level of the patch centre along the inferior-superior axis, in thirds of the brain's
  extent: 0 inferior (cerebellum, brainstem, temporal poles), 1 middle (ventricles, basal ganglia),
  2 superior (centrum semiovale, vertex). ``patient_id`` = the patch position on a 3x4x3 grid: the jittered,
  intensity-perturbed copies cut at one position share it.

``split`` is ``train`` or ``val``, fixed per pseudo-patient (about one in five is ``val``, every class
present in both).

Counts (deterministic, seed 0): 225 slices (70 axial, 85 coronal, 70 sagittal; 177 train / 48 val, 30
pseudo-patients) and 58 patches (16 inferior, 24 middle, 18 superior; 46 train / 12 val, 29 positions of
36 kept, the rest being mostly outside the brain). About 3 s on 2 CPU cores; under 5 MB on disk.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from medssl.data.paths import cache_dir

VERSION = 1
DIRNAME = f"demo-v{VERSION}"
MANIFEST = "manifest.json"
NILEARN_HINT = "the demo data needs nilearn: pip install 'medssl[demo]'"

TISSUE_NAMES = ("background", "csf_other", "grey_matter", "white_matter")
LABELS_2D = ("axial", "coronal", "sagittal")
LABELS_3D = ("inferior", "middle", "superior")

SIZE_2D = 64
PIXEL_MM_2D = 3  # in-plane block average of the 1 mm template
STEP_MM_2D = 2  # slice thickness/step (block average along the slicing axis)
SLAB_SLICES_2D = 8  # consecutive slices per pseudo-patient (16 mm)
MIN_BRAIN_PIXELS_2D = 200  # keep slices with at least this much brain (~18 cm^2)

SIZE_3D = 32
SPACING_3D = 2  # mm; 32^3 voxels cover 64 mm
GRID_3D = (3, 4, 3)  # patch positions along x (R), y (A), z (S)
COPIES_3D = 2  # jittered, intensity-perturbed copies per position
JITTER_MM_3D = 4
MIN_BRAIN_FRACTION_3D = 0.2
SEED = 0

_SOURCE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_AXIS_OF_ORIENTATION = {"axial": 2, "coronal": 1, "sagittal": 0}  # RAS voxel axis that is sliced
_COLUMNS = ("image", "label", "mask", "patient_id", "split")


@dataclass(frozen=True)
class DemoDataset:
    """Where a built demo dataset lives and how many samples it holds."""

    root: Path
    datalist_2d: Path
    datalist_3d: Path
    num_2d: int
    num_3d: int


def build_demo_dataset(root: str | Path | None = None, *, force: bool = False) -> DemoDataset:
    """Build the demo dataset into ``<root>/demo-v1`` once (a few seconds) and reuse it afterwards.

    ``root`` is a cache folder (default: ``medssl.data.paths.cache_dir()``); only its ``demo-v1`` subfolder
    is written. The build goes to a temporary sibling folder, ``manifest.json`` is written last and the folder
    is then renamed into place, so an interrupted build is never used: it is rebuilt on the next call.
    ``force`` rebuilds even when a complete build exists.
    """
    cache = Path(root).expanduser() if root is not None else cache_dir()
    target = cache / DIRNAME
    if not force:
        found = _load(target)
        if found is not None:
            return found
    sources = _source_files()
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(cache)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DIRNAME}.tmp-", dir=cache))
    try:
        _build(tmp, sources)
        _swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    found = _load(target)
    if found is None:  # pragma: no cover - only if someone deletes the folder under us
        raise RuntimeError(f"the demo dataset build in {target} did not leave a readable {MANIFEST}")
    return found


# ---------------------------------------------------------------------------------------------------------
# cache bookkeeping


def _load(target: Path) -> DemoDataset | None:
    """The dataset in ``target`` if its manifest says it is complete and current, else None."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        return None
    found = DemoDataset(
        root=target,
        datalist_2d=target / "2d" / "datalist.csv",
        datalist_3d=target / "3d" / "datalist.csv",
        num_2d=int(manifest.get("num_2d", -1)),
        num_3d=int(manifest.get("num_3d", -1)),
    )
    if not (found.datalist_2d.is_file() and found.datalist_3d.is_file()):
        return None
    return found


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` to ``target``, replacing an old or incomplete ``target``."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{DIRNAME}.old-", dir=target.parent))
        os.replace(target, old / "data")
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process finished first and put its (equally complete) build in place: use that one.
        if _load(target) is None:
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temp_dirs(cache: Path, max_age_s: float = 3600.0) -> None:
    """Delete leftovers of interrupted builds; recent ones may belong to a build still running."""
    now = time.time()
    for pattern in (f".{DIRNAME}.tmp-*", f".{DIRNAME}.old-*"):
        for leftover in cache.glob(pattern):
            try:
                if leftover.is_dir() and now - leftover.stat().st_mtime > max_age_s:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                pass


def _source_files() -> dict[str, Path]:
    """The template files inside the installed nilearn package (located without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(NILEARN_HINT)
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    files = {key: data_dir / _SOURCE.format(key) for key in ("t1", "gm", "wm")}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the demo data needs the MNI152 template files shipped with nilearn, but {missing} are missing; "
            "reinstall nilearn (pip install --force-reinstall 'medssl[demo]')"
        )
    return files


# ---------------------------------------------------------------------------------------------------------
# the build


def _build(out: Path, sources: dict[str, Path]) -> None:
    t1_img = nib.Nifti1Image.from_filename(sources["t1"])
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    gm = np.asarray(nib.Nifti1Image.from_filename(sources["gm"]).dataobj, dtype=np.float32)
    wm = np.asarray(nib.Nifti1Image.from_filename(sources["wm"]).dataobj, dtype=np.float32)
    gm /= max(float(gm.max()), 1e-6)
    wm /= max(float(wm.max()), 1e-6)
    brain = t1 > 0.2 * t1.max()
    lo, hi = float(t1[brain].min()), float(t1[brain].max())
    image = np.clip((t1 - lo) / (hi - lo), 0.0, 1.0)
    image[~brain] = 0.0
    # Everything below works in the brain's bounding box; the affine follows the crop.
    start, stop = _brain_box(brain)
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    maps = np.stack([m[box] for m in (image, brain.astype(np.float32), gm, wm)])  # (4, X, Y, Z)
    affine = np.asarray(t1_img.affine, dtype=np.float64) @ _translation(start)

    num_2d = _build_2d(out / "2d", maps)
    num_3d = _build_3d(out / "3d", maps, affine)
    manifest = {
        "name": "medssl-demo",
        "version": VERSION,
        "source": "MNI152 ICBM 2009a symmetric T1 + GM/WM probability maps, as shipped in nilearn",
        "source_files": sorted(path.name for path in sources.values()),
        "num_2d": num_2d,
        "num_3d": num_3d,
        "labels_2d": dict(enumerate(LABELS_2D)),
        "labels_3d": dict(enumerate(LABELS_3D)),
        "tissue_labels": dict(enumerate(TISSUE_NAMES)),
        "size_2d": [SIZE_2D, SIZE_2D],
        "pixel_mm_2d": PIXEL_MM_2D,
        "size_3d": [SIZE_3D] * 3,
        "spacing_3d_mm": [SPACING_3D] * 3,
        "seed": SEED,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks the build complete


def _block_mean(volume: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Average non-overlapping blocks over the trailing axes (zero-padded up to a multiple of ``factors``)."""
    lead = volume.ndim - len(factors)
    pad = [(0, 0)] * lead + [(0, -size % f) for size, f in zip(volume.shape[lead:], factors, strict=True)]
    if any(after for _, after in pad):
        volume = np.pad(volume, pad)
    shape = list(volume.shape[:lead])
    for size, f in zip(volume.shape[lead:], factors, strict=True):
        shape += [size // f, f]
    blocks = volume.reshape(shape)
    return blocks.mean(axis=tuple(lead + 2 * i + 1 for i in range(len(factors))))


def _tissue(brain: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """0 background, 1 CSF/other, 2 GM, 3 WM from (averaged) brain fraction and probabilities."""
    labels = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8) + 1
    labels[brain < 0.5] = 0
    return labels


def _brain_box(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and stop (exclusive) voxel index of the brain's bounding box."""
    start, stop = [], []
    for axis in range(brain.ndim):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(brain.ndim) if a != axis)))
        start.append(present[0])
        stop.append(present[-1] + 1)
    return np.array(start), np.array(stop)


def _to_display(plane: np.ndarray) -> np.ndarray:
    """A plane over RAS axes (i, j) as an image: columns follow i, rows run down j (anterior/superior up)."""
    return np.flipud(plane.T)


def _center_pad(plane: np.ndarray, size: int) -> np.ndarray:
    rows, cols = plane.shape
    if rows > size or cols > size:
        raise ValueError(f"demo slice of shape {plane.shape} does not fit in {size}x{size}")
    top, left = (size - rows) // 2, (size - cols) // 2
    out = np.zeros((size, size), dtype=plane.dtype)
    out[top : top + rows, left : left + cols] = plane
    return out


def _build_2d(out: Path, maps: np.ndarray) -> int:
    """Slices of ``maps`` (intensity, brain, p_gm, p_wm over the brain's box) as PNGs + datalist."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    rows: list[dict[str, object]] = []
    for label, orientation in enumerate(LABELS_2D):
        axis = _AXIS_OF_ORIENTATION[orientation]
        factors = tuple(STEP_MM_2D if a == axis else PIXEL_MM_2D for a in range(3))
        small = np.moveaxis(_block_mean(maps, factors), 1 + axis, 1)  # (4, slices, first, second)
        for index in range(small.shape[1]):
            image, brain, gm, wm = small[:, index]
            tissue = _tissue(brain, gm, wm)
            if np.count_nonzero(tissue) < MIN_BRAIN_PIXELS_2D:
                continue
            name = f"{orientation}_{index:03d}.png"
            pixels = np.round(_center_pad(_to_display(image), SIZE_2D) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(out / "images" / name)
            Image.fromarray(_center_pad(_to_display(tissue), SIZE_2D)).save(out / "masks" / name)
            slab = index // SLAB_SLICES_2D
            rows.append(
                {
                    "image": f"images/{name}",
                    "label": label,
                    "mask": f"masks/{name}",
                    "patient_id": f"{orientation}-{slab:02d}",
                    "split": "val" if slab % 5 == 2 else "train",
                }
            )
    _write_csv(out / "datalist.csv", rows)
    return len(rows)


def _build_3d(out: Path, maps: np.ndarray, affine: np.ndarray) -> int:
    """Jittered, perturbed patches of ``maps`` on a grid over the brain's box as NIfTI + datalist."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    extent_mm = SIZE_3D * SPACING_3D  # side of a patch in 1 mm template voxels
    rows: list[dict[str, object]] = []
    positions = [(i, j, k) for i in range(GRID_3D[0]) for j in range(GRID_3D[1]) for k in range(GRID_3D[2])]
    for position, cell in enumerate(positions):
        # Centre of the grid cell in template voxels; the label is the z cell (thirds of the brain's height).
        centre = np.array([(cell[a] + 0.5) * maps.shape[1 + a] / GRID_3D[a] for a in range(3)])
        level = cell[2] * len(LABELS_3D) // GRID_3D[2]
        kept = []
        for _ in range(COPIES_3D):
            shift = rng.integers(-JITTER_MM_3D, JITTER_MM_3D + 1, size=3)
            start = np.round(centre).astype(int) + shift - extent_mm // 2  # voxel index in the box
            crop = _window(maps, start, start + extent_mm)
            image, brain, gm, wm = _block_mean(crop, (SPACING_3D,) * 3)
            if float((brain >= 0.5).mean()) < MIN_BRAIN_FRACTION_3D:
                break
            kept.append((start, _perturb(image, rng), _tissue(brain, gm, wm)))
        if len(kept) < COPIES_3D:
            continue  # a grid cell that is mostly outside the brain
        val = position % 5 == 2
        for start, image, tissue in kept:
            name = f"patch_{len(rows):03d}.nii.gz"
            patch_affine = affine @ _patch_to_box(start)
            _save_nifti(image.astype(np.float32), patch_affine, out / "images" / name)
            _save_nifti(tissue, patch_affine, out / "masks" / name)
            rows.append(
                {
                    "image": f"images/{name}",
                    "label": level,
                    "mask": f"masks/{name}",
                    "patient_id": f"pos{position:02d}",
                    "split": "val" if val else "train",
                }
            )
    _write_csv(out / "datalist.csv", rows)
    return len(rows)


def _window(maps: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``maps[:, start:stop]`` over the trailing three axes, zero where the window leaves the volume."""
    out = np.zeros((maps.shape[0], *(stop - start)), dtype=maps.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(stop, maps.shape[1:])
    if np.all(src_hi > src_lo):
        src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
        dst = tuple(slice(a, b) for a, b in zip(src_lo - start, src_hi - start, strict=True))
        out[(slice(None), *dst)] = maps[(slice(None), *src)]
    return out


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _patch_to_box(start: np.ndarray) -> np.ndarray:
    """Patch voxel -> box voxel: scale by the block size, origin at the centre of the first block."""
    matrix = np.diag([float(SPACING_3D)] * 3 + [1.0])
    matrix[:3, 3] = start + (SPACING_3D - 1) / 2
    return matrix


def _perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seeded scanner-like variation: gamma, contrast, a smooth multiplicative bias field, a little noise.

    Values are rounded to 1e-3 so that the gzipped NIfTI files stay small.
    """
    gamma = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in image.shape], indexing="ij"))
    bias = np.exp(np.tensordot(rng.normal(0.0, 0.1, size=3), grid, axes=1))
    noise = rng.normal(0.0, rng.uniform(0.005, 0.02), size=image.shape)
    out = rng.uniform(0.9, 1.1) * image**gamma * bias + noise * (image > 0)
    return np.clip(np.round(out, 3), 0.0, 1.0)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code="mni")
    img.set_sform(affine, code="mni")
    img.header.set_xyzt_units("mm")
    img.to_filename(path)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
