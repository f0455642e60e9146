"""``medssl data inspect`` on the real datasets: each format's counts, labels or masks, and recipe views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medssl.cli import main

from .conftest import RECIPES

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _inspect(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "out"
    assert main(["data", "inspect", *args, "--out", str(out), "--max-items", "10"]) == 0
    assert (out / "preview.png").is_file()
    return json.loads((out / "report.json").read_text()), str(out)


def test_pneumoniamnist_npz_counts_and_labels(real_data, tmp_path, capsys):
    report, _ = _inspect(tmp_path, str(real_data / "pneumoniamnist" / "pneumoniamnist.npz"))
    assert report["splits"] == {"test": 624, "train": 4708, "val": 524}
    assert report["labels"]["per_split"]["train"] == {"0": 1214, "1": 3494}  # the official class counts
    assert report["shapes"]["most_common"] == [[[28, 28], 10]] and report["spatial_dims"] == 2
    assert "seeded random sample of 10 of 5856 items" in capsys.readouterr().out


def test_adrenalmnist3d_npz_is_3d_with_its_labels(real_data, tmp_path):
    report, _ = _inspect(tmp_path, str(real_data / "adrenalmnist3d" / "adrenalmnist3d.npz"))
    assert report["spatial_dims"] == 3 and report["splits"]["train"] == 1188
    assert report["labels"]["per_split"]["train"] == {"0": 929, "1": 259}


def test_hippocampus_folder_pairs_masks_and_shows_the_recipes_views(real_data, tmp_path):
    recipe = str(RECIPES / "mae_vit_tiny_hippocampus_3d.yaml")
    report, out = _inspect(tmp_path, str(real_data / "msd_hippocampus"), "--recipe", recipe)
    assert report["num_items"] == 260 and report["problems"] == []
    assert set(report["mask_classes"]) == {"0", "1", "2"}
    assert report["spacing"]["median"] == [1.0, 1.0, 1.0]
    assert report["intensity_preprocessed"]["max"] <= 1.0  # the recipe's mr preset
    with Image.open(Path(out) / "views.png") as png:
        assert png.height > 4 * 96


def test_drive_masks_are_0_255_and_the_hint_says_what_to_set(real_data, tmp_path, capsys):
    report, _ = _inspect(tmp_path, str(real_data / "DRIVE"))
    assert report["splits"] == {"test": 20, "train": 20}
    assert report["channels"] == {"3": 10} and set(report["mask_classes"]) == {"0", "255"}
    assert "data.mask_threshold" in capsys.readouterr().out
