import logging
import pickle

import numpy as np
import pytest

from medssl.data.datalist import load_datalist
from medssl.data.validation import DatalistError, Problem, check_datalist, find_problems


def truncate(path, keep: float = 0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture
def broken(make, volume):
    """A 3D datalist with two good items and one of each kind of bad entry, as {name: path}."""
    noisy = (
        np.random.default_rng(0).integers(0, 30000, (20, 20, 20)).astype(np.int16)
    )  # gzip cannot shrink it
    paths = {
        "good": make.nifti("good.nii.gz", volume),
        "good_singleton_4th": make.nifti("good4.nii.gz", volume[..., None]),
        "missing": make.root / "missing.nii.gz",
        "truncated": truncate(make.nifti("truncated.nii.gz", noisy)),
        "truncated_raw": truncate(make.nifti("truncated.nii", volume)),
        "2d": make.pil("slice.png", np.zeros((8, 8), np.uint8)),
        "not_an_image": make.text("notes.nii.gz", "this is text"),
        "not_an_image_png": make.text("fake.png", "this is text"),
        "4d": make.nifti("fmri.nii.gz", np.zeros((4, 4, 4, 3), np.int16)),
        "two_series": make.dicom("two_series", volume, series_uid="1.2.3.1"),
        "empty_axis": make.nifti("empty.nii", np.zeros((4, 0, 4), np.int16)),
    }
    make.dicom("two_series", volume[..., :2], series_uid="1.2.3.2", suffix=".b.dcm")
    return paths


REASONS = {
    "missing": "file not found",
    "truncated": "truncated or corrupt file: header says 16,352 bytes of data, the gzip trailer records ",
    "truncated_raw": "truncated file: header says 592 bytes of data, file holds 355",
    "2d": "is 2D (shape 8x8) but this run is 3D (spatial_dims=3)",
    "not_an_image": "not a readable image (NIfTI header: File notes.nii.gz is not a gzip file)",
    "not_an_image_png": "not a readable image (PIL: cannot identify image file 'fake.png')",
    "4d": "is 4D (shape 4x4x4x3) but this run is 3D (spatial_dims=3)",
    "two_series": "expected a folder holding one DICOM series, found 2 series",
    "empty_axis": "is empty (shape 4x0x4)",
}


def test_one_error_lists_every_bad_file(broken):
    items = [{"image": str(path)} for path in broken.values()]
    with pytest.raises(DatalistError) as info:
        check_datalist(items, spatial_dims=3, source="list.csv")
    report = str(info.value)
    assert report.startswith(f"{len(REASONS)} problems in the datalist list.csv:")
    assert report.endswith("Fix these entries or pass --data.skip_bad true to drop them.")
    for name, reason in REASONS.items():
        assert f"- {broken[name]}: {reason}" in report, name
    assert f"- {broken['good']}:" not in report and f"- {broken['good_singleton_4th']}:" not in report
    assert [p.path for p in info.value.problems] == [str(broken[name]) for name in REASONS]


def test_skip_bad_keeps_good_items_and_warns(broken, caplog):
    items = [{"image": str(path)} for path in broken.values()]
    with caplog.at_level(logging.WARNING, logger="medssl.data"):
        good = check_datalist(items, spatial_dims=3, skip_bad=True)
    assert [item["image"] for item in good] == [str(broken["good"]), str(broken["good_singleton_4th"])]
    assert "Dropped 9 of 11 items (skip_bad)" in caplog.text and "file not found" in caplog.text


def test_skip_bad_with_nothing_left_raises(broken):
    with pytest.raises(DatalistError, match="No usable item is left"):
        check_datalist([{"image": str(broken["missing"])}], spatial_dims=3, skip_bad=True)


def test_empty_datalist():
    with pytest.raises(DatalistError, match=r"- /data/scans: no images found"):
        check_datalist([], spatial_dims=2, source="/data/scans")


def test_empty_folder_and_csv_without_image_column(make):
    (make.root / "empty").mkdir()
    with pytest.raises(DatalistError, match=r"empty: no images found"):
        load_datalist(make.root / "empty")
    with pytest.raises(DatalistError, match=r"list\.csv: no 'image' column; found columns: file"):
        load_datalist(make.text("list.csv", "file\na.nii.gz\n"))


def test_3d_volume_in_2d_run_and_masks(make, volume):
    image = make.nifti("a.nii.gz", volume)
    found = find_problems([{"image": str(image)}], spatial_dims=2)
    assert found == [(0, Problem(str(image), "is 3D (shape 6x5x4) but this run is 2D (spatial_dims=2)"))]
    small_mask = make.nifti("a_seg.nii.gz", volume[:3])
    found = find_problems([{"image": str(image), "mask": str(small_mask)}], spatial_dims=3)
    assert found == [
        (0, Problem(str(small_mask), "mask shape 3x5x4 does not match image shape 6x5x4", "mask"))
    ]
    assert (
        find_problems([{"image": str(image), "mask": str(small_mask)}], spatial_dims=3, keys=("image",)) == []
    )


def test_arrays():
    items = [
        {"image": np.zeros((1, 28, 28), np.uint8), "patient_id": "train-0"},
        {"image": np.zeros((28, 28), np.uint8), "patient_id": "train-1"},
        {"image": np.zeros((1, 0, 28), np.uint8)},
    ]
    found = find_problems(items, spatial_dims=2)
    assert [(i, p.path, p.reason) for i, p in found] == [
        (
            1,
            "item 1 (patient_id train-1)",
            "array of shape 28x28 is not channel-first 2D (expected (C, x, y) for spatial_dims=2)",
        ),
        (2, "item 2", "is empty (shape 0x28)"),
    ]
    assert find_problems(items[:1], spatial_dims=3)[0][1].reason.startswith("array of shape 1x28x28 is not")


def test_report_is_capped_and_error_pickles():
    problems = [Problem(f"/data/{i}.png", "file not found") for i in range(60)]
    error = DatalistError(problems)
    lines = str(error).splitlines()
    assert lines[0] == "60 problems in the datalist:" and lines[-1] == "... and 10 more" and len(lines) == 52
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_bad_spatial_dims():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        find_problems([], spatial_dims=4)


@pytest.mark.realdata
def test_real_hippocampus_validates_clean(real_data):
    items = load_datalist(real_data / "msd_hippocampus" / "images")
    assert check_datalist(items, spatial_dims=3) == items
    pneumonia = load_datalist(real_data / "pneumoniamnist" / "pneumoniamnist.npz")
    assert len(check_datalist(pneumonia, spatial_dims=2)) == len(pneumonia)
