"""Tiny images in every supported format, written at test time. Arrays are indexed (x, y[, z])."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

SPACING = (0.5, 0.8, 2.0)
ORIGIN = (10.0, -4.0, 3.0)


def xyz_volume(shape: tuple[int, ...] = (6, 5, 4)) -> np.ndarray:
    """A small int16 array with distinct values, so that any axis mix-up shows."""
    return np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)


def write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    affine = np.diag([*spacing[:3], *[1.0] * (3 - len(spacing[:3])), 1.0])
    affine[:3, 3] = ORIGIN
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def sitk_image(array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(array.T)  # SimpleITK arrays are (z, y, x)
    image.SetSpacing(spacing[: array.ndim])
    image.SetOrigin(ORIGIN[: array.ndim])
    return image


def write_sitk(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    sitk.WriteImage(sitk_image(array, spacing), str(path))
    return path


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    *,
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    suffix: str = ".dcm",
    z_positions: list[float] | None = None,
) -> Path:
    """One file per z slice with the tags a scanner would write (SimpleITK's DicomSeriesFromArray example).

    ``z_positions`` overrides where each slice lies along z (mm), e.g. to write uneven spacing.
    """
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk_image(array)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    tags = {
        "0008|0060": "MR",
        "0010|0010": "Test^Patient",
        "0010|0020": "P001",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
        "0020|000e": series_uid,
        "0020|0037": "1\\0\\0\\0\\1\\0",
        "0018|0050": str(SPACING[2]),
    }
    for z in range(volume.GetDepth()):
        image_slice = volume[:, :, z]
        for tag, value in tags.items():
            image_slice.SetMetaData(tag, value)
        position = list(volume.TransformIndexToPhysicalPoint((0, 0, z)))
        if z_positions is not None:
            position[2] = z_positions[z]
        image_slice.SetMetaData("0020|0032", "\\".join(map(str, position)))
        image_slice.SetMetaData("0020|0013", str(z + 1))
        image_slice.SetMetaData("0008|0018", f"{series_uid}.{z + 1}")
        writer.SetFileName(str(folder / f"slice{z:03d}{suffix}"))
        writer.Execute(image_slice)
    return folder


def write_pil(path: Path, array: np.ndarray) -> Path:
    """Write an (x, y) or (x, y, 3) uint8 array: PIL images are (height, width[, 3]) = (y, x[, 3])."""
    Image.fromarray(np.ascontiguousarray(np.swapaxes(array, 0, 1))).save(path)
    return path


def write_npz(path: Path, image_shape: tuple[int, ...], label_columns: int = 1, sizes=(5, 2, 3)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, label_columns), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


class Maker:
    """Writes tiny files under one folder; every method takes a path relative to it and returns the path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def nifti(self, name: str, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
        return write_nifti(self._path(name), array, spacing)

    def sitk(self, name: str, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
        return write_sitk(self._path(name), array, spacing)

    def dicom(self, name: str, array: np.ndarray, **kwargs) -> Path:
        return write_dicom_series(self._path(name), array, **kwargs)

    def pil(self, name: str, array: np.ndarray) -> Path:
        return write_pil(self._path(name), array)

    def npz(self, name: str, image_shape: tuple[int, ...], label_columns: int = 1) -> Path:
        return write_npz(self._path(name), image_shape, label_columns)

    def text(self, name: str, content: str) -> Path:
        path = self._path(name)
        path.write_text(content)
        return path


@pytest.fixture
def make(tmp_path: Path) -> Maker:
    return Maker(tmp_path)


@pytest.fixture
def volume() -> np.ndarray:
    return xyz_volume()


@pytest.fixture
def real_data() -> Path:
    """The shared real datasets (MEDSSL_DATA_DIR, default <repo>/../shared/data); skip when absent."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    root = Path(os.environ.get("MEDSSL_DATA_DIR", default))
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MEDSSL_DATA_DIR)")
    return root
