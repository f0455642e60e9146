import numpy as np
import pytest
import torch

from medssl.data.caching import CacheTooLargeError
from medssl.data.datamodule import PretrainDataModule
from medssl.data.validation import DatalistError
from medssl.transforms.views import ViewAugment, multi_view_transform


def _npz(path, n=20, shape=(24, 24)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (count, 1))
    np.savez(path, **arrays)
    return path


def _module(source, spatial_dims=2, **kwargs):
    dm = PretrainDataModule(
        source=str(source), spatial_dims=spatial_dims, batch_size=4, num_workers=0, **kwargs
    )
    dm.view_transform = multi_view_transform([ViewAugment(size=16)] * 2, spatial_dims)
    return dm


@pytest.mark.parametrize("cache", ["none", "memory", "disk"])
def test_batches_hold_two_views_for_every_cache_mode(tmp_path, cache):
    dm = _module(_npz(tmp_path / "d.npz"), cache=cache, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"view_0", "view_1"}
    assert batch["view_0"].shape == (4, 1, 16, 16) and batch["view_0"].dtype == torch.float32
    assert float(batch["view_0"].min()) >= -0.5 and float(batch["view_0"].max()) <= 1.5  # min-max preset
    if cache == "disk":
        assert any((tmp_path / "cache").rglob("*.pt"))


def test_npz_uses_its_own_train_and_val_splits_and_never_test(tmp_path):
    train, val = _module(_npz(tmp_path / "d.npz")).items()
    assert len(train) == 20 and len(val) == 4
    assert {i["split"] for i in train} == {"train"} and {i["split"] for i in val} == {"val"}


def test_limit_takes_a_seeded_subset(tmp_path):
    source = _npz(tmp_path / "d.npz", n=40)
    first = _module(source, limit=10, seed=3).items()
    again = _module(source, limit=10, seed=3).items()
    assert sum(map(len, first)) == 10
    assert [i["patient_id"] for i in first[0]] == [i["patient_id"] for i in again[0]]


def test_3d_volumes_are_padded_or_cropped_to_spatial_size(tmp_path):
    source = _npz(tmp_path / "d.npz", n=6, shape=(10, 12, 14))
    dm = _module(source, spatial_dims=3, spatial_size=(12, 12, 12))
    sample = dm.preprocess()(dict(dm.items()[0][0]))
    assert sample["image"].shape == (1, 12, 12, 12)


def test_wrong_dimensionality_is_reported_before_training(tmp_path):
    with pytest.raises(DatalistError, match="3D"):
        _module(_npz(tmp_path / "d.npz"), spatial_dims=3).items()


def test_cache_that_does_not_fit_is_refused_before_caching(tmp_path, monkeypatch):
    monkeypatch.setattr("medssl.data.caching.MAX_SHARE", 1e-12)
    dm = _module(_npz(tmp_path / "d.npz"), cache="memory")
    with pytest.raises(CacheTooLargeError, match=r"--data\.cache disk"):
        dm.setup("fit")


def test_batch_size_is_lowered_for_tiny_datasets(tmp_path):
    dm = _module(_npz(tmp_path / "d.npz", n=3), cache="none")
    dm.batch_size = 8
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["view_0"].shape[0] == 3


def test_repeats_make_an_epoch_several_passes_with_new_views(tmp_path, caplog):
    source = _npz(tmp_path / "d.npz", n=4)
    once = _module(source, cache="none")
    once.num_workers = 1  # the hint is about idle workers: none with num_workers 0
    once.setup("fit")
    with caplog.at_level("WARNING", logger="medssl.data"):
        assert len(once.train_dataloader()) == 1
    assert "one batch per epoch" in caplog.text and "data.repeats" in caplog.text  # the hint for tiny sets
    caplog.clear()
    dm = _module(source, cache="none", repeats=3)
    dm.num_workers = 1
    dm.setup("fit")
    with caplog.at_level("WARNING", logger="medssl.data"):
        batches = list(dm.train_dataloader())
    assert len(batches) == 3 and "one batch per epoch" not in caplog.text
    views = torch.cat([b["view_0"] for b in batches]).flatten(1)
    assert len({tuple(v.tolist()) for v in views}) == 12  # each image three times, never the same view


def test_repeats_below_one_are_refused(tmp_path):
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        _module(_npz(tmp_path / "d.npz"), repeats=0)
