import pytest
import torch

from medssl.transforms.intensity import intensity_transform


def _image(values):
    return {"image": torch.tensor(values, dtype=torch.float32).reshape(1, 2, 2)}


def test_ct_window_clips_and_scales_hounsfield_units():
    out = intensity_transform("ct", ct_window=(-100.0, 100.0))(_image([-1000.0, -100.0, 0.0, 500.0]))
    assert out["image"].flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0])


def test_named_ct_window_and_unknown_window():
    out = intensity_transform("ct", ct_window="brain")(_image([0.0, 40.0, 80.0, 200.0]))
    assert out["image"].flatten().tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown CT window 'liver'"):
        intensity_transform("ct", ct_window="liver")


def test_minmax_and_zscore():
    out = intensity_transform("xray")(_image([10.0, 20.0, 30.0, 50.0]))
    assert out["image"].flatten().tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    z = intensity_transform("mr_zscore")(_image([1.0, 2.0, 3.0, 4.0]))["image"]
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def test_mr_percentiles_map_to_unit_range():
    image = {"image": torch.arange(101, dtype=torch.float32).reshape(1, 101, 1)}
    out = intensity_transform("mr", percentiles=(10.0, 90.0))(image)["image"].flatten()
    assert float(out[10]) == pytest.approx(0.0) and float(out[90]) == pytest.approx(1.0)
    assert float(out[50]) == pytest.approx(0.5)


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'xray'"):
        intensity_transform("x-ray")
