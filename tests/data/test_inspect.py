"""Dataset inspection: counts, shapes, spacings, intensities, labels, mask classes and problems."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.data.datalist import load_datalist
from medssl.data.inspect import inspect_items, intensity_outliers, label_balance, mask_classes, preview_grid


def test_label_balance_counts_classes_overall_and_per_split() -> None:
    items = [
        {"image": "a", "label": 0, "split": "train"},
        {"image": "b", "label": 1, "split": "train"},
        {"image": "c", "label": 1, "split": "test"},
        {"image": "d"},
    ]
    balance = label_balance(items)
    assert balance["labelled"] == 3
    assert balance["all"] == {"0": 1, "1": 2}
    assert balance["per_split"] == {"test": {"1": 1}, "train": {"0": 1, "1": 1}}


def test_label_balance_counts_positives_of_multi_label_vectors() -> None:
    items = [{"image": "a", "label": [1, 0, 1]}, {"image": "b", "label": [0, 0, 1]}]
    assert label_balance(items)["all"] == {"class 0": 1, "class 2": 2}


def test_mask_classes_give_presence_and_voxel_share() -> None:
    first = np.zeros((1, 4, 4))
    first[0, :2, :2] = 2  # 4 of 16 voxels
    second = np.zeros((1, 4, 4))
    classes = mask_classes([first, second])
    assert classes["0"] == {"images": 2.0, "voxel_fraction": 28 / 32}
    assert classes["2"] == {"images": 1.0, "voxel_fraction": 4 / 32}


def test_intensity_outliers_name_images_scaled_differently() -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((1, 8, 8)) for _ in range(5)] + [rng.random((1, 8, 8)) * 1000]
    assert intensity_outliers(images, [f"img{i}" for i in range(6)]) == ["img5"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inspect_reports_shapes_spacing_and_a_bad_file(make, spatial_dims) -> None:
    rng = np.random.default_rng(0)
    shape = (12, 10) if spatial_dims == 2 else (12, 10, 8)
    for i in range(6):
        array = (rng.random(shape) * 100).astype(np.int16)
        if spatial_dims == 2:
            make.pil(f"data/img_{i}.png", array.astype(np.uint8))
        else:
            make.nifti(f"data/vol_{i}.nii.gz", array, spacing=(0.5, 0.8, 2.0))
    make.text("data/broken.nii.gz" if spatial_dims == 3 else "data/broken.png", "not an image")
    items = load_datalist(make.root / "data")
    report, loaded = inspect_items(items, source="test", max_items=4, seed=0)
    assert report.num_items == 7 and report.spatial_dims == spatial_dims and report.spatial_dims_inferred
    assert len(report.problems) == 1 and "broken" in report.problems[0]
    assert report.sampled == 4 == len(loaded)  # at most max_items, drawn from the 6 good items
    assert report.shapes["most_common"] == [[list(shape), 4]]
    expected_spacing = [1.0, 1.0] if spatial_dims == 2 else [0.5, 0.8, 2.0]
    assert report.spacing["median"] == expected_spacing
    assert 0 <= report.intensity["min"] <= report.intensity["p0.5"] < report.intensity["p99.5"] <= 100
    text = "\n".join(report.lines())
    assert "seeded random sample of 4 of 7 items" in text and "broken" in text
    json.dumps(report.to_dict())  # the JSON report holds plain values only


def test_inspect_with_wrong_spatial_dims_reports_every_item(make) -> None:
    for i in range(3):
        make.pil(f"data/img_{i}.png", np.zeros((8, 8), np.uint8))
    report, loaded = inspect_items(load_datalist(make.root / "data"), source="x", spatial_dims=3)
    assert len(report.problems) == 3 and all("this run is 3D" in p for p in report.problems)
    assert not loaded and report.sampled == 0


def test_preview_grid_shows_images_with_masks_in_colour(make) -> None:
    image = np.full((16, 16), 100, np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    make.pil("img.png", image)
    make.pil("mask.png", mask)
    items = [{"image": str(make.root / "img.png"), "mask": str(make.root / "mask.png"), "label": 1}]
    report, loaded = inspect_items(items, source="x")
    assert report.mask_classes["255"]["images"] == 1.0
    rgb = preview_grid(loaded, mask_values=[0, 255], tile=32)
    red = (rgb[..., 0].astype(int) - rgb[..., 1]) > 60
    assert rgb.dtype == np.uint8 and red.sum() > 0  # 255 shown in the first class colour
