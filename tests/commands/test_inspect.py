"""``medssl data inspect`` through the CLI: report, preview grid and the views of a pretraining recipe."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.cli import main
from medssl.recipes_dir import recipes_dir

from .conftest import SMOKE

TILE = 96


def _inspect(*args: str) -> int:
    return main(["data", "inspect", *args])


def test_folder_of_pngs_gives_report_and_preview(tmp_path, png_folder, capsys):
    out = tmp_path / "out"
    assert _inspect(str(png_folder), "--out", str(out), "--max-items", "5") == 0
    printed = capsys.readouterr().out
    assert "items: 12; 2D (inferred" in printed
    assert "seeded random sample of 5 of 12 items" in printed
    assert "shape: 24x24 (all 5)" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["num_items"] == 12 and report["sampled"] == 5 and report["problems"] == []
    with Image.open(out / "preview.png") as png:
        assert png.width >= 5 * TILE and png.height >= TILE
    assert not (out / "views.png").exists()  # views need a recipe


@pytest.mark.parametrize("method", ["simclr", "moco", "dino", "mae", "jcl"])
def test_recipe_views_use_the_methods_own_transform_2d(tmp_path, png_folder, method):
    out = tmp_path / "out"
    recipe = str(SMOKE / f"{method}_2d.yaml")
    assert _inspect(str(png_folder), "--recipe", recipe, "--out", str(out), "--views", "3") == 0
    columns = {"simclr": 3, "moco": 3, "dino": 5, "mae": 2, "jcl": 3}[method]  # input + the views
    with Image.open(out / "views.png") as png:
        assert png.height > 3 * TILE and png.width > columns * TILE and png.width < (columns + 1) * TILE


def _decathlon(root: Path, count: int = 6) -> Path:
    """A Decathlon-style task: images + 3-class label maps, 3D, with a dataset.json."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(count):
        image = rng.normal(100, 20, (20, 18, 16)).astype(np.float32)
        label = np.zeros((20, 18, 16), np.uint8)
        label[5:10, 5:10, 4:12] = 1
        label[12:15, 5:10, 4:12] = 2
        affine = np.diag([1.2, 1.2, 2.5, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i}.nii.gz")
        training.append({"image": f"imagesTr/case_{i}.nii.gz", "label": f"labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}, "training": training}))
    return root / "dataset.json"


def test_decathlon_3d_with_masks_and_a_recipe(tmp_path, capsys):
    source = _decathlon(tmp_path / "task")
    out = tmp_path / "out"
    recipe = str(SMOKE / "simclr_3d.yaml")
    assert _inspect(str(source), "--recipe", recipe, "--out", str(out), "--data.intensity", "mr") == 0
    printed = capsys.readouterr().out
    assert "items: 6 (train 6); 3D" in printed and "inferred" not in printed
    assert "spacing (mm): 1.2 x 1.2 x 2.5 (all 6)" in printed
    assert "intensity after the recipe's preprocessing (intensity mr)" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["mask_classes"]) == {"0", "1", "2"}
    assert report["mask_classes"]["1"]["images"] == 6
    assert (out / "views.png").is_file() and (out / "preview.png").is_file()


def test_npz_labels_and_an_intensity_preset_without_a_recipe(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n).reshape(n, 1) % 2
    np.savez(tmp_path / "tiny.npz", **arrays)
    out = tmp_path / "out"
    assert _inspect(str(tmp_path / "tiny.npz"), "--out", str(out), "--data.intensity", "xray") == 0
    printed = capsys.readouterr().out
    assert "items: 13 (test 3, train 8, val 2)" in printed
    assert "labels (all 13 labelled items): 0: 7 (53.8 %), 1: 6 (46.2 %)" in printed
    assert "intensity after preprocessing (intensity xray)" in printed


def test_channel_mismatch_is_reported_as_a_problem(tmp_path, png_folder, capsys):
    assert _inspect(str(png_folder), "--out", str(tmp_path / "o"), "--data.in_channels", "3",
                    "--data.intensity", "minmax") == 0  # fmt: skip
    assert "has 1 channels but in_channels=3" in capsys.readouterr().out


def test_bad_requests_get_a_clear_message(tmp_path, png_folder, capsys):
    assert main(["data", "--help"]) == 0
    assert "medssl data inspect" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "nonsense"])
    assert exit_info.value.code == 2 and "sub-commands" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _inspect(str(png_folder), "--model.init_args.lr", "1")
    assert "need --recipe" in capsys.readouterr().err
    finetune = str(recipes_dir() / "finetune" / "cls_resnet18_pneumoniamnist_2d.yaml")
    with pytest.raises(SystemExit):
        _inspect(str(png_folder), "--recipe", finetune)
    assert "not a pretraining recipe" in capsys.readouterr().err
    assert _inspect(str(tmp_path / "missing"), "--out", str(tmp_path / "o")) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="the demo data needs nilearn")
@pytest.mark.parametrize("dims", [2, 3])
def test_demo_data_with_the_demo_recipe(tmp_path, capsys, dims):
    from medssl.data.demo import build_demo_dataset

    demo = build_demo_dataset(tmp_path / "cache")
    source = demo.datalist_2d if dims == 2 else demo.datalist_3d
    recipe = recipes_dir() / ("demo/simclr_demo_2d.yaml" if dims == 2 else "smoke/simclr_3d.yaml")
    out = tmp_path / "out"
    assert _inspect(str(source), "--recipe", str(recipe), "--out", str(out), "--max-items", "20") == 0
    printed = capsys.readouterr().out
    assert f"items: {demo.num_2d if dims == 2 else demo.num_3d} (train" in printed
    assert "mask classes (over 20 sampled masks)" in printed
    assert {"0", "1", "2", "3"} == set(json.loads((out / "report.json").read_text())["mask_classes"])
    assert (out / "views.png").is_file()
