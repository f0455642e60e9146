"""The bad-input corpus: one small dataset per kind of broken input, written at test time.

Each builder writes good items plus one bad one under ``root`` and returns a ``Case``: the ``medssl``
command line (without ``--trainer.default_root_dir``), the file (or item) the report must name and the
reason it must give. ``SOURCE_LEVEL`` kinds are problems of the datalist itself, which ``--data.skip_bad``
cannot drop; the others are entries it drops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

from medssl.recipes_dir import recipes_dir

from ..data.conftest import write_dicom_series

SMOKE_3D = str(recipes_dir() / "smoke" / "simclr_3d.yaml")
SEG_3D = str(recipes_dir() / "finetune" / "seg_resnet18_hippocampus_3d.yaml")
CLS_2D = str(recipes_dir() / "finetune" / "cls_resnet18_pneumoniamnist_2d.yaml")
TINY = "{widen_factor: 0.125, small_input: true}"
SHAPE = (16, 16, 16)


@dataclass
class Case:
    args: list[str]
    where: str  # the file or item the report line names
    reason: str  # a substring of that line's reason
    root_only_mock: str | None = None  # a path reads of which fail with EACCES (tests may run as root)


def _volume(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 100


def _nifti(path: Path, array: np.ndarray, zooms=(1.5, 1.5, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.diag([*zooms[:3], 1.0]))
    image.header.set_zooms(tuple(zooms[: array.ndim]) + (1.0,) * (array.ndim - len(zooms)))
    nib.save(image, path)
    return path


def _good_folder(root: Path, count: int = 4) -> Path:
    folder = root / "vols"
    for i in range(count):
        _nifti(folder / f"vol_{i:02d}.nii.gz", _volume(i))
    return folder


def _pretrain(source: Path) -> list[str]:
    return ["pretrain", "--config", SMOKE_3D, "--data.source", str(source)]


def _with(root: Path, name: str, array: np.ndarray, **kw) -> Case:
    folder = _good_folder(root)
    bad = _nifti(folder / name, array, **kw)
    return Case(_pretrain(folder), str(bad), "")


# --- image files --------------------------------------------------------------------------------
def truncated(root: Path) -> Case:
    folder = _good_folder(root)
    data = (folder / "vol_00.nii.gz").read_bytes()
    bad = folder / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    return Case(_pretrain(folder), str(bad), "truncated or corrupt file")


def not_an_image(root: Path) -> Case:
    folder = _good_folder(root)
    bad = folder / "report.nii.gz"
    bad.write_text("Patient discharged, see notes.")
    return Case(_pretrain(folder), str(bad), "not a readable image (NIfTI header")


def nan_voxels(root: Path) -> Case:
    array = _volume(9)
    array[2, 3, 4], array[5, 5, 5] = np.nan, np.inf
    case = _with(root, "nan.nii.gz", array)
    case.reason = "has 1 NaN and 1 Inf voxel values"
    return case


def constant(root: Path) -> Case:
    case = _with(root, "blank.nii.gz", np.full(SHAPE, 7.0, np.float32))
    case.reason = "is constant (every voxel is 7)"
    return case


def four_d(root: Path) -> Case:
    case = _with(root, "fmri.nii.gz", np.zeros((*SHAPE, 3), np.float32), zooms=(1.5, 1.5, 2.0, 1.0))
    case.reason = "is 4D (shape 16x16x16x3) but this run is 3D"
    return case


def two_d(root: Path) -> Case:
    folder = _good_folder(root)
    bad = folder / "slice.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    return Case(_pretrain(folder), str(bad), "is 2D (shape 16x16) but this run is 3D")


def zero_spacing(root: Path) -> Case:
    folder = _good_folder(root)
    bad = folder / "nospacing.mha"  # nibabel repairs a zero NIfTI pixdim on load; a MetaImage keeps it
    sitk.WriteImage(sitk.GetImageFromArray(_volume(8)), str(bad))
    text = bad.read_bytes()
    start = text.index(b"ElementSpacing")
    bad.write_bytes(text[:start] + b"ElementSpacing = 1 0 1" + text[text.index(b"\n", start) :])
    return Case(_pretrain(folder), str(bad), "has voxel spacing 1x0x1 mm: zero, negative or not a number")


def extreme_spacing(root: Path) -> Case:
    case = _with(root, "microns.nii.gz", _volume(8), zooms=(500.0, 500.0, 800.0))
    case.reason = "has voxel spacing 500x500x800 mm, outside 0.001..100 mm"
    return case


def missing_file(root: Path) -> Case:
    folder = _good_folder(root)
    csv = root / "list.csv"
    rows = [str(p) for p in sorted(folder.iterdir())] + [str(root / "gone.nii.gz")]
    csv.write_text("image\n" + "\n".join(rows) + "\n")
    return Case(_pretrain(csv), str(root / "gone.nii.gz"), "file not found")


def unreadable(root: Path) -> Case:
    folder = _good_folder(root)
    bad = folder / "locked.nii.gz"
    bad.write_bytes((folder / "vol_00.nii.gz").read_bytes())
    if os.geteuid() != 0:
        bad.chmod(0)
        return Case(_pretrain(folder), str(bad), "not readable (permission denied)")
    # root reads any file whatever its mode: the test makes opening it fail as the kernel would
    return Case(_pretrain(folder), str(bad), "not readable (permission denied)", root_only_mock=str(bad))


# --- DICOM ---------------------------------------------------------------------------------------
def _dicom_volume() -> np.ndarray:
    return (np.arange(8 * 8 * 6, dtype=np.int16).reshape(8, 8, 6) * 3) % 1000


def dicom_missing_slice(root: Path) -> Case:
    folder = _good_folder(root)
    series = write_dicom_series(folder / "ct_series", _dicom_volume())
    (series / "slice003.dcm").unlink()
    return Case(_pretrain(folder), str(series), "DICOM series has a gap of 4 mm between slices 3 and 4")


def dicom_uneven_spacing(root: Path) -> Case:
    folder = _good_folder(root)
    series = write_dicom_series(folder / "ct_series", _dicom_volume(), z_positions=[0, 2, 4, 5, 7, 9])
    return Case(_pretrain(folder), str(series), "DICOM series has inconsistent slice spacing: from 1 to 2 mm")


def dicom_two_series(root: Path) -> Case:
    folder = _good_folder(root)
    series = write_dicom_series(folder / "study", _dicom_volume(), series_uid="1.2.3.1")
    write_dicom_series(series, _dicom_volume()[..., :3], series_uid="1.2.3.2", suffix=".b.dcm")
    return Case(_pretrain(folder), str(series), "expected a folder holding one DICOM series, found 2 series")


# --- datalists -----------------------------------------------------------------------------------
def empty_csv(root: Path) -> Case:
    csv = root / "list.csv"
    csv.write_text("")
    return Case(_pretrain(csv), str(csv), "empty file")


def csv_without_image_column(root: Path) -> Case:
    folder = _good_folder(root)
    csv = root / "list.csv"
    csv.write_text("path,label\n" + "".join(f"{p},1\n" for p in sorted(folder.iterdir())))
    return Case(_pretrain(csv), str(csv), "no 'image' column; found columns: path, label")


def unknown_label(root: Path) -> Case:
    folder = root / "xray"
    folder.mkdir(parents=True)
    rows = []
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
        rows.append(f"{folder / f'{i}.png'},{'normal' if i % 2 else 'pneumonia'}")
    rows[5] = f"{folder / '5.png'},pneumonai"
    csv = root / "labels.csv"
    csv.write_text("image,label\n" + "\n".join(rows) + "\n")
    args = ["finetune", "--config", CLS_2D, "--data.source", str(csv), "--model.pretrained", "none"]
    args += ["--model.backbone", "resnet10", "--model.backbone_kwargs", TINY]
    reason = "label 'pneumonai' is not one of the num_classes=2 class names the other labels use"
    reason += " (normal, pneumonia)"
    return Case(args, str(folder / "5.png"), reason)


def patient_in_two_splits(root: Path) -> Case:
    folder = _good_folder(root, count=6)
    files = sorted(folder.iterdir())
    rows = [f"{f},P{i},{'val' if i == 5 else 'train'}" for i, f in enumerate(files[:-1])]
    rows.append(f"{files[-1]},P2,val")  # P2 also has a training image
    csv = root / "list.csv"
    csv.write_text("image,patient_id,split\n" + "\n".join(rows) + "\n")
    reason = f"is in more than one split: train ({files[2].name}), val ({files[-1].name})"
    return Case(_pretrain(csv), "patient_id P2", reason)


# --- segmentation masks ----------------------------------------------------------------------------
def _seg(root: Path, bad_mask: Callable[[Path], Path]) -> tuple[list[str], Path]:
    rows = []
    for i in range(5):
        image = _nifti(root / "img" / f"case{i}.nii.gz", _volume(i))
        labels = np.zeros(SHAPE, np.uint8)
        labels[4:10, 4:10, 4:10] = 1 + i % 2
        mask = _nifti(root / "lab" / f"case{i}.nii.gz", labels)
        rows.append(f"{image},{mask},P{i}")
    bad = bad_mask(root / "lab" / "case3.nii.gz")
    csv = root / "seg.csv"
    csv.write_text("image,mask,patient_id\n" + "\n".join(rows) + "\n")
    args = ["finetune", "--config", SEG_3D, "--data.source", str(csv), "--model.pretrained", "none"]
    args += [
        "--model.backbone",
        "resnet10",
        "--model.backbone_kwargs",
        TINY,
        "--data.patch_size",
        "[16,16,16]",
    ]
    return args, bad


def mask_shape(root: Path) -> Case:
    args, bad = _seg(root, lambda p: _nifti(p, np.zeros((16, 16, 12), np.uint8)))
    return Case(args, str(bad), "mask shape 16x16x12 does not match image shape 16x16x16")


def mask_affine(root: Path) -> Case:
    args, bad = _seg(root, lambda p: _nifti(p, np.zeros(SHAPE, np.uint8), zooms=(1.0, 1.0, 1.0)))
    return Case(
        args, str(bad), "mask is not on the image's voxel grid: spacing 1x1x1 mm vs the image's 1.5x1.5x2"
    )


def mask_labels(root: Path) -> Case:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 2:5, 2:5] = 5
    args, bad = _seg(root, lambda p: _nifti(p, labels))
    return Case(args, str(bad), "mask values 5 are not classes 0..2 (num_classes=3)")


SOURCE_LEVEL = {"empty_csv", "csv_without_image_column"}

KINDS: dict[str, Callable[[Path], Case]] = {
    f.__name__: f
    for f in (
        truncated,
        not_an_image,
        nan_voxels,
        constant,
        four_d,
        two_d,
        zero_spacing,
        extreme_spacing,
        missing_file,
        unreadable,
        dicom_missing_slice,
        dicom_uneven_spacing,
        dicom_two_series,
        empty_csv,
        csv_without_image_column,
        unknown_label,
        patient_in_two_splits,
        mask_shape,
        mask_affine,
        mask_labels,
    )
}
