from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.recipes_dir import recipes_dir

SMOKE = recipes_dir() / "smoke"


def write_png_folder(folder: Path, count: int = 12, size: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def write_nifti_folder(folder: Path, count: int = 12, shape=(20, 20, 20)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(count):
        nib.save(
            nib.Nifti1Image(rng.random(shape, dtype=np.float32) * 100, affine), folder / f"vol_{i:02d}.nii.gz"
        )
    return folder


@pytest.fixture
def png_folder(tmp_path):
    return write_png_folder(tmp_path / "png")


@pytest.fixture
def nifti_folder(tmp_path):
    return write_nifti_folder(tmp_path / "nifti")


def smoke_args(spatial_dims: int, source: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--config",
        str(SMOKE / f"simclr_{spatial_dims}d.yaml"),
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run_dir),
        *extra,
    ]
