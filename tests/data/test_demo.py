"""The embedded demo dataset: layout, labels, affines and the build-once cache logic."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.data import demo

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None,
    reason="the demo data needs nilearn (pip install 'medssl[demo]')",
)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoDataset:
    return demo.build_demo_dataset(tmp_path_factory.mktemp("cache"))


def _fake_build(calls: list[Path]):
    """A stand-in for the real build that writes just what a complete build is recognised by."""

    def build(out: Path, sources: dict[str, Path]) -> None:
        calls.append(out)
        for kind in ("2d", "3d"):
            (out / kind).mkdir()
            (out / kind / "datalist.csv").write_text("image,label,mask,patient_id,split\n")
        (out / demo.MANIFEST).write_text(json.dumps({"version": demo.VERSION, "num_2d": 0, "num_3d": 0}))

    return build


def test_build_writes_documented_layout(built: demo.DemoDataset) -> None:
    assert built.root.name == "demo-v1"
    rows_2d, rows_3d = _rows(built.datalist_2d), _rows(built.datalist_3d)
    assert (built.num_2d, built.num_3d) == (len(rows_2d), len(rows_3d)) == (225, 58)
    assert list(rows_2d[0]) == ["image", "label", "mask", "patient_id", "split"]
    assert sorted(p.name for p in (built.root / "2d" / "images").iterdir()) == sorted(
        Path(r["image"]).name for r in rows_2d
    )
    for row in rows_2d[::20]:
        png = Image.open(built.datalist_2d.parent / row["image"])
        png_mask = Image.open(built.datalist_2d.parent / row["mask"])
        assert (png.mode, png.size, png_mask.mode, png_mask.size) == ("L", (64, 64), "L", (64, 64))
    for row in rows_3d[::10]:
        image = nib.Nifti1Image.from_filename(built.datalist_3d.parent / row["image"])
        mask = nib.Nifti1Image.from_filename(built.datalist_3d.parent / row["mask"])
        assert image.shape == mask.shape == (32, 32, 32)
        assert (image.get_data_dtype(), mask.get_data_dtype()) == (np.float32, np.uint8)
        data = image.get_fdata()
        assert data.min() >= 0.0 and data.max() <= 1.0
    size = sum(p.stat().st_size for p in built.root.rglob("*") if p.is_file())
    assert size < 20e6


def test_masks_hold_tissue_labels(built: demo.DemoDataset) -> None:
    rows_2d, rows_3d = _rows(built.datalist_2d), _rows(built.datalist_3d)
    masks_2d = np.stack([np.asarray(Image.open(built.datalist_2d.parent / r["mask"])) for r in rows_2d])
    images_2d = np.stack([np.asarray(Image.open(built.datalist_2d.parent / r["image"])) for r in rows_2d])
    folder_3d = built.datalist_3d.parent
    masks_3d = np.stack(
        [np.asarray(nib.Nifti1Image.from_filename(folder_3d / r["mask"]).dataobj) for r in rows_3d]
    )
    for masks in (masks_2d, masks_3d):
        counts = np.bincount(masks.ravel(), minlength=5)
        assert counts[4:].sum() == 0 and (counts[:4] > 0).all()
        # Brain is mostly GM + WM; CSF/other is the smallest brain class.
        assert counts[1] < counts[3] < counts[2]
    assert (masks_2d.reshape(len(rows_2d), -1) > 0).any(axis=1).all()  # every kept slice shows brain
    assert images_2d[masks_2d == 0].mean() < 10 < images_2d[masks_2d == 3].mean()
    # T1 contrast: white matter brighter than grey matter brighter than CSF.
    means = [images_2d[masks_2d == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_labels_take_documented_values(built: demo.DemoDataset) -> None:
    for datalist, names in ((built.datalist_2d, demo.LABELS_2D), (built.datalist_3d, demo.LABELS_3D)):
        rows = _rows(datalist)
        assert {r["label"] for r in rows} == {str(k) for k in range(len(names))}
        for split in ("train", "val"):
            assert {r["label"] for r in rows if r["split"] == split} == {str(k) for k in range(len(names))}
        assert {r["split"] for r in rows} == {"train", "val"}
        splits_of_patient: dict[str, set[str]] = {}
        for r in rows:
            splits_of_patient.setdefault(r["patient_id"], set()).add(r["split"])
        assert all(len(s) == 1 for s in splits_of_patient.values())  # patient-level split
        assert 20 <= len(splits_of_patient) < len(rows)  # pseudo-patients group several samples
    for r in _rows(built.datalist_2d):  # 2D label = orientation, also the file-name prefix
        assert Path(r["image"]).name.startswith(demo.LABELS_2D[int(r["label"])])
    heights: dict[int, list[float]] = {}
    for r in _rows(built.datalist_3d):  # 3D label = height band of the patch centre
        affine = nib.Nifti1Image.from_filename(built.datalist_3d.parent / r["image"]).affine
        heights.setdefault(int(r["label"]), []).append(float((affine @ [15.5, 15.5, 15.5, 1])[2]))
    assert max(heights[0]) < min(heights[1]) and max(heights[1]) < min(heights[2])
    counts = Counter(r["patient_id"] for r in _rows(built.datalist_3d))
    assert set(counts.values()) == {demo.COPIES_3D}


def test_nifti_affine_carries_spacing_and_position(built: demo.DemoDataset) -> None:
    template = nib.Nifti1Image.from_filename(demo._source_files()["t1"])
    t1 = np.asarray(template.dataobj)
    brain = t1 > 0.2 * t1.max()
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for row in _rows(built.datalist_3d)[::7]:
        mask_img = nib.Nifti1Image.from_filename(built.datalist_3d.parent / row["mask"])
        image_img = nib.Nifti1Image.from_filename(built.datalist_3d.parent / row["image"])
        np.testing.assert_allclose(mask_img.affine, image_img.affine)
        np.testing.assert_allclose(mask_img.header.get_zooms(), (2.0, 2.0, 2.0))
        np.testing.assert_allclose(mask_img.affine[:3, :3], 2.0 * np.eye(3))
        assert mask_img.header.get_xyzt_units()[0] == "mm"
        # The affine puts every voxel where the template says its tissue is.
        world = nib.affines.apply_affine(mask_img.affine, grid)
        index = np.round(nib.affines.apply_affine(np.linalg.inv(template.affine), world)).astype(int)
        inside = np.all((index >= 0) & (index < brain.shape), axis=1)
        expected = np.zeros(len(grid), dtype=bool)
        expected[inside] = brain[tuple(index[inside].T)]
        observed = np.asarray(mask_img.dataobj).reshape(-1) > 0
        assert (expected == observed).mean() > 0.95


def test_second_call_reuses_the_build(built: demo.DemoDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = (built.root / demo.MANIFEST).stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("rebuilt a complete demo dataset")

    monkeypatch.setattr(demo, "_build", fail)
    again = demo.build_demo_dataset(built.root.parent)
    assert again == built
    assert (built.root / demo.MANIFEST).stat().st_mtime_ns == stamp


def test_interrupted_build_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(out: Path, sources: dict[str, Path]) -> None:
        (out / "2d").mkdir()
        (out / "2d" / "datalist.csv").write_text("image\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.build_demo_dataset(tmp_path)
    assert not (tmp_path / "demo-v1").exists()
    # A killed process leaves its temp folder; a partial folder without manifest is not trusted either.
    stale = tmp_path / ".demo-v1.tmp-killed"
    (stale / "2d").mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    recent = tmp_path / ".demo-v1.tmp-running"
    recent.mkdir()
    (tmp_path / "demo-v1" / "2d").mkdir(parents=True)
    (tmp_path / "demo-v1" / "2d" / "partial.png").write_bytes(b"")

    calls: list[Path] = []
    monkeypatch.setattr(demo, "_build", _fake_build(calls))
    found = demo.build_demo_dataset(tmp_path)
    assert len(calls) == 1
    assert (found.root / demo.MANIFEST).is_file()
    assert not (found.root / "2d" / "partial.png").exists()
    assert not stale.exists() and recent.exists()  # only old leftovers are cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo-v1.tmp-running", "demo-v1"]
    demo.build_demo_dataset(tmp_path)
    assert len(calls) == 1


def test_force_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo, "_build", _fake_build(calls))
    demo.build_demo_dataset(tmp_path)
    (tmp_path / "demo-v1" / "extra.txt").write_text("from the old build")
    demo.build_demo_dataset(tmp_path, force=True)
    assert len(calls) == 2
    assert not (tmp_path / "demo-v1" / "extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-v1"]


def test_default_root_is_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_build", _fake_build([]))
    monkeypatch.setenv("MEDSSL_CACHE_DIR", str(tmp_path / "medssl-cache"))
    assert demo.build_demo_dataset().root == tmp_path / "medssl-cache" / "demo-v1"


def test_missing_nilearn_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nilearn" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'medssl\[demo\]'"):
        demo.build_demo_dataset(tmp_path)
    assert not (tmp_path / "demo-v1").exists()
