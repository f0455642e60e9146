import json

import numpy as np
import pytest

from medssl.data.datalist import describe_source, load_datalist
from medssl.data.validation import DatalistError


def test_folder_scan_finds_every_format_once(make, volume):
    root = make.root
    make.nifti("b.nii.gz", volume)
    make.sitk("sub/c.mhd", volume)  # writes c.raw too, which is not an item
    make.sitk("sub/d.nrrd", volume)
    make.pil("sub/e.png", np.zeros((4, 4), np.uint8))
    make.dicom("patient1/series", volume, suffix="")  # extension-less DICOM files: found by the DICM magic
    make.nifti(".hidden.nii.gz", volume)
    make.nifti("labels/b.nii.gz", volume)  # annotation folders are left out
    make.text("notes.txt", "not an image")
    items = load_datalist(root)
    assert [item["image"] for item in items] == [
        str(root / "b.nii.gz"),
        str(root / "patient1" / "series"),
        str(root / "sub" / "c.mhd"),
        str(root / "sub" / "d.nrrd"),
        str(root / "sub" / "e.png"),
    ]
    assert load_datalist(str(root)) == items  # deterministic, str or Path


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(DatalistError, match=r"no images found; expected files \(\.nii"):
        load_datalist(tmp_path)


def test_csv(make, volume):
    make.nifti("img/a.nii.gz", volume)
    absolute = make.nifti("elsewhere/b.nii.gz", volume)
    csv = make.text(
        "lists/data.csv",
        "image,label,mask,patient_id,split,comment\n"
        "../img/a.nii.gz,1,../img/a_seg.nii.gz,p1,train,x\n"
        f"{absolute},0;2,,p2,Validation,\n"
        "../img/a.nii.gz,,,,,\n"
        "../img/a.nii.gz,benign,,7,test,\n",
    )
    items = load_datalist(csv)
    root = make.root
    assert items[0] == {
        "image": str(root / "img" / "a.nii.gz"),
        "label": 1,
        "mask": str(root / "img" / "a_seg.nii.gz"),
        "patient_id": "p1",
        "split": "train",
    }
    assert items[1] == {"image": str(absolute), "label": [0, 2], "patient_id": "p2", "split": "val"}
    assert items[2] == {"image": str(root / "img" / "a.nii.gz")}
    assert items[3]["label"] == "benign" and items[3]["patient_id"] == "7"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,label\na.nii.gz,1\n", r"no 'image' column; found columns: path, label"),
        ("image,label\n", r"no rows"),
        ("image,split\na.nii.gz,holdout\n", r"data\.csv:2: split 'holdout' is not one of train, val, test"),
    ],
)
def test_bad_csv(make, content, message):
    with pytest.raises(DatalistError, match=message):
        load_datalist(make.text("data.csv", content))


def test_json_list_and_sections(make):
    listed = make.text("list.json", json.dumps([{"image": "a.png", "label": 3}, "b.png"]))
    assert load_datalist(listed) == [
        {"image": str(make.root / "a.png"), "label": 3},
        {"image": str(make.root / "b.png")},
    ]
    sections = {
        "training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}],
        "validation": [{"image": "b.nii.gz", "label": [0, 1]}],
        "test": ["c.nii.gz"],
    }
    items = load_datalist(make.text("sections.json", json.dumps(sections)))
    assert [item["split"] for item in items] == ["train", "val", "test"]
    assert items[0]["mask"] == str(make.root / "a_seg.nii.gz") and "label" not in items[0]
    assert items[1]["label"] == [0, 1]


def test_decathlon_dataset_json(make):
    dataset = {
        "name": "Hippocampus",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior"},
        "training": [{"image": "./imagesTr/h_1.nii.gz", "label": "./labelsTr/h_1.nii.gz"}],
        "test": ["./imagesTs/h_2.nii.gz"],
    }
    make.text("Task04/dataset.json", json.dumps(dataset))
    items = load_datalist(make.root / "Task04")
    task = make.root / "Task04"
    assert items == [
        {
            "image": str(task / "imagesTr/h_1.nii.gz"),
            "mask": str(task / "labelsTr/h_1.nii.gz"),
            "split": "train",
        },
        {"image": str(task / "imagesTs/h_2.nii.gz"), "split": "test"},
    ]
    assert load_datalist(task / "dataset.json") == items


def test_bad_json(make):
    with pytest.raises(DatalistError, match=r"bad\.json: not a usable JSON datalist \(expected a list"):
        load_datalist(make.text("bad.json", json.dumps({"images": []})))
    with pytest.raises(DatalistError, match=r"\[items\]\[0\]: entry .* has no 'image' path"):
        load_datalist(make.text("noimage.json", json.dumps([{"label": 1}])))


@pytest.mark.parametrize(
    ("image_shape", "label_columns", "item_shape"),
    [
        ((28, 28), 1, (1, 28, 28)),  # 2D greyscale
        ((8, 8, 3), 1, (3, 8, 8)),  # 2D RGB
        ((6, 6, 6), 1, (1, 6, 6, 6)),  # 3D
        ((8, 8), 4, (1, 8, 8)),  # multi-label
    ],
)
def test_medmnist_npz(make, image_shape, label_columns, item_shape):
    path = make.npz("m.npz", image_shape, label_columns)
    items = load_datalist(path)
    assert len(items) == 10
    assert [item["split"] for item in items] == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    assert items[5]["patient_id"] == "val-0"
    assert all(item["image"].shape == item_shape for item in items)
    with np.load(path) as raw:
        first, labels = raw["train_images"][0], raw["train_labels"][0]
    np.testing.assert_array_equal(
        np.moveaxis(items[0]["image"], 0, -1) if image_shape[-1] == 3 else items[0]["image"][0], first
    )
    expected = [int(v) for v in labels] if label_columns > 1 else int(labels[0])
    assert items[0]["label"] == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, r"missing\.csv: not found; expected a folder"),
        ("list.txt", "a.png", r"list\.txt: unsupported datalist '\.txt'"),
        ("other.npz", "npz", r"other\.npz: not a readable \.npz \(not a zip archive\)"),
    ],
)
def test_unusable_sources(make, name, content, message):
    path = make.root / name if content is None else make.text(name, content)
    with pytest.raises(DatalistError, match=message):
        load_datalist(path)


def test_npz_without_medmnist_keys(make):
    path = make.root / "x.npz"
    np.savez(path, images=np.zeros((2, 4, 4)))
    with pytest.raises(
        DatalistError, match=r"expected keys train_images, val_images, test_images; found images"
    ):
        load_datalist(path)


def test_describe_source(make):
    path = make.npz("m.npz", (4, 4))
    assert describe_source(path) == f"npz {path}: 10 items (test 3, train 5, val 2)"


@pytest.mark.realdata
def test_real_hippocampus_folder_and_pneumoniamnist(real_data):
    hippocampus = load_datalist(real_data / "msd_hippocampus" / "images")
    assert len(hippocampus) == 260 and hippocampus[0]["image"].endswith("hippocampus_001.nii.gz")
    assert len(load_datalist(real_data / "msd_hippocampus")) == 260  # labels/ is left out
    pneumonia = load_datalist(real_data / "pneumoniamnist" / "pneumoniamnist.npz")
    train = [item for item in pneumonia if item["split"] == "train"]
    assert len(train) == 4708 and all(item["image"].shape == (1, 28, 28) for item in train)
    assert {item["label"] for item in train} == {0, 1}
