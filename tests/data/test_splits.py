import pytest

from medssl.data.splits import check_patient_leakage, split_train_val


def patients(n_patients: int, per_patient: int = 3) -> list[dict]:
    return [
        {"image": f"/data/p{p:02d}_{i}.nii.gz", "patient_id": f"p{p:02d}"}
        for p in range(n_patients)
        for i in range(per_patient)
    ]


def ids(items: list[dict]) -> set[str]:
    return {item["patient_id"] for item in items}


def test_patient_level_split():
    items = patients(20)
    train, val = split_train_val(items, val_fraction=0.25, seed=0)
    assert len(ids(val)) == 5 and len(ids(train)) == 15
    assert not ids(train) & ids(val)
    assert len(train) + len(val) == len(items)
    assert [item for item in items if item in train] == train  # original order kept


def test_split_is_deterministic_for_a_seed():
    items = patients(20)
    first = split_train_val(items, val_fraction=0.2, seed=7)
    assert split_train_val(items, val_fraction=0.2, seed=7) == first
    assert split_train_val(list(reversed(items)), val_fraction=0.2, seed=7)[1] != []
    assert ids(split_train_val(list(reversed(items)), val_fraction=0.2, seed=7)[1]) == ids(first[1])
    assert ids(split_train_val(items, val_fraction=0.2, seed=8)[1]) != ids(first[1])


def test_explicit_split_is_respected():
    items = [
        {"image": "a", "split": "train"},
        {"image": "b", "split": "val"},
        {"image": "c", "split": "test"},
        {"image": "d", "split": "train"},
    ]
    train, val = split_train_val(items, val_fraction=0.5, seed=0)
    assert [i["image"] for i in train] == ["a", "d"] and [i["image"] for i in val] == ["b"]


def test_train_and_test_only_carves_val_from_train():
    items = [{"image": str(i), "split": "train"} for i in range(10)] + [{"image": "t", "split": "test"}]
    train, val = split_train_val(items, val_fraction=0.2, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert all(item["split"] == "train" for item in train + val)


def test_small_and_zero_fractions():
    items = [{"image": "a"}, {"image": "b"}]
    assert len(split_train_val(items, val_fraction=0.1, seed=0)[1]) == 1
    assert split_train_val(items, val_fraction=0.0, seed=0) == (items, [])
    assert split_train_val(items[:1], val_fraction=0.5, seed=0) == (items[:1], [])
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        split_train_val(items, val_fraction=1.0, seed=0)


def test_patient_leakage():
    items = [
        {"image": "a", "patient_id": "p1", "split": "train"},
        {"image": "b", "patient_id": "p1", "split": "test"},
        {"image": "c", "patient_id": "p2", "split": "train"},
        {"image": "d", "patient_id": "p2", "split": "train"},
        {"image": "e", "split": "val"},
    ]
    assert check_patient_leakage(items) == ["p1"]
    train, val = split_train_val(patients(10), val_fraction=0.3, seed=1)
    labelled = [{**i, "split": "train"} for i in train] + [{**i, "split": "val"} for i in val]
    assert check_patient_leakage(labelled) == []
