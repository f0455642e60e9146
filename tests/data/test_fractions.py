"""Label fractions: whole patients, stratified, seeded, nested, at least one patient per class."""

from collections import Counter

import pytest

from medssl.data.fractions import select_label_fraction, stratum


def _items(n_patients: int, per_patient: int = 1, positives: float = 0.25) -> list[dict]:
    n_pos = round(positives * n_patients)
    return [
        {"image": f"p{p}_{s}.png", "patient_id": f"p{p}", "label": int(p < n_pos)}
        for p in range(n_patients)
        for s in range(per_patient)
    ]


def test_whole_patients_are_kept() -> None:
    items = _items(40, per_patient=3)
    kept = select_label_fraction(items, 0.25, seed=0)
    per_patient = Counter(item["patient_id"] for item in kept)
    assert set(per_patient.values()) == {3}  # never part of a patient
    assert len(per_patient) == 10


def test_stratification_keeps_class_ratios() -> None:
    items = _items(200, positives=0.2)  # 40 positive, 160 negative patients
    kept = select_label_fraction(items, 0.1, seed=3)
    assert Counter(item["label"] for item in kept) == {1: 4, 0: 16}


def test_seed_determinism_and_nesting() -> None:
    items = _items(100)
    first = select_label_fraction(items, 0.1, seed=7)
    assert first == select_label_fraction(items, 0.1, seed=7)
    assert first != select_label_fraction(items, 0.1, seed=8)
    larger = select_label_fraction(items, 0.25, seed=7)
    assert {i["image"] for i in first} <= {i["image"] for i in larger}
    assert [i["image"] for i in first] == sorted(
        (i["image"] for i in first), key=[j["image"] for j in items].index
    )


def test_tiny_fraction_keeps_one_patient_per_class() -> None:
    items = _items(30, positives=0.1)  # 3 positive patients
    kept = select_label_fraction(items, 0.01, seed=0)
    assert Counter(item["label"] for item in kept) == {0: 1, 1: 1}


def test_full_fraction_items_without_patient_and_no_stratify() -> None:
    items = [{"image": f"{i}.png"} for i in range(10)]
    assert select_label_fraction(items, 1.0, seed=0) == items
    assert len(select_label_fraction(items, 0.3, seed=0, stratify_key=None)) == 3


def test_multi_label_strata_and_bad_fraction() -> None:
    assert stratum([0, 1, 1]) == 1
    assert stratum([0, 0]) == -1
    items = [{"image": f"{i}", "label": [int(i % 3 == 0), int(i % 3 == 1), 0]} for i in range(30)]
    kept = select_label_fraction(items, 0.1, seed=0)
    assert Counter(stratum(i["label"]) for i in kept) == {0: 1, 1: 1, -1: 1}
    with pytest.raises(ValueError, match="label_fraction"):
        select_label_fraction(items, 0.0, seed=0)
