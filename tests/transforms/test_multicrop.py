import itertools

import pytest
import torch
from monai.utils import set_determinism

from medssl.transforms.multicrop import multi_crop_transform
from medssl.transforms.views import ViewAugment

#: Only the random resized crop: makes the crop extent measurable on a ramp image.
CROP_ONLY = {"flip_prob": 0.0, "intensity": 0.0, "gamma": (1.0, 1.0), "blur_prob": 0.0, "noise_std": 0.0}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_keys_shapes_and_types(spatial_dims):
    crops = multi_crop_transform(ViewAugment(size=12), ViewAugment(size=6, min_scale=0.2), 3, spatial_dims)
    out = crops({"image": torch.rand((1,) + (20,) * spatial_dims)})
    assert list(out) == ["global_0", "global_1", "local_0", "local_1", "local_2"]
    for key, crop in out.items():
        size = 12 if key.startswith("global") else 6
        assert crop.shape == (1,) + (size,) * spatial_dims
        assert crop.dtype == torch.float32 and type(crop) is torch.Tensor


def test_anisotropic_sizes_and_no_local_crops():
    crops = multi_crop_transform(ViewAugment(size=(12, 16, 8)), ViewAugment(size=(4, 6, 4)), 0, 3)
    out = crops({"image": torch.rand(1, 20, 24, 16)})
    assert list(out) == ["global_0", "global_1"]
    assert out["global_0"].shape == (1, 12, 16, 8)


def test_every_crop_gets_its_own_randomness():
    crops = multi_crop_transform(ViewAugment(size=8), ViewAugment(size=8, min_scale=0.2), 4, 2)
    out = crops({"image": torch.rand(1, 32, 32)})
    for a, b in itertools.combinations(out, 2):
        assert not torch.equal(out[a], out[b]), (a, b)


def test_seeded_crops_are_reproducible():
    image = torch.rand(1, 16, 16, 16)
    outs = []
    for _ in range(2):
        crops = multi_crop_transform(ViewAugment(size=8), ViewAugment(size=4, min_scale=0.2), 2, 3)
        crops.set_random_state(seed=3)
        outs.append(crops({"image": image.clone()}))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    set_determinism(None)


def test_local_crops_are_small_and_global_crops_large():
    """On a ramp along the first axis, a crop's value range measures its extent along that axis."""
    side = 64
    image = torch.arange(side, dtype=torch.float32).view(1, side, 1).expand(1, side, side).clone()
    crops = multi_crop_transform(
        ViewAugment(size=side, min_scale=0.6, **CROP_ONLY),
        ViewAugment(size=side, min_scale=0.1, **CROP_ONLY),
        4,
        2,
        local_max_scale=0.3,
    )
    crops.set_random_state(seed=0)
    for _ in range(10):
        out = crops({"image": image})
        extent = {k: (v.max() - v.min()).item() + 1 for k, v in out.items()}  # in input pixels
        assert all(0.1 * side - 1 <= extent[f"local_{i}"] <= 0.3 * side + 1 for i in range(4)), extent
        assert all(extent[f"global_{i}"] >= 0.6 * side - 1 for i in range(2)), extent
    set_determinism(None)


@pytest.mark.parametrize("min_scale, max_scale", [(0.5, 0.4), (0.0, 0.4), (0.1, 1.5)])
def test_bad_local_scales_are_rejected(min_scale, max_scale):
    with pytest.raises(ValueError, match="local_max_scale"):
        multi_crop_transform(ViewAugment(), ViewAugment(min_scale=min_scale), 2, 2, local_max_scale=max_scale)


def test_every_crop_comes_from_the_shared_region():
    """On a ramp along the first axis, all crops of one image together span at most the region."""
    side = 100
    image = torch.arange(side, dtype=torch.float32).view(1, side, 1).expand(1, side, side).clone()
    crops = multi_crop_transform(
        ViewAugment(size=16, min_scale=0.5, max_scale=0.8, **CROP_ONLY),
        ViewAugment(size=8, min_scale=0.1, **CROP_ONLY),
        4,
        2,
        local_max_scale=0.3,
        region=0.25,
    )
    crops.set_random_state(seed=0)
    for _ in range(10):
        out = crops({"image": image})
        values = torch.cat([v.flatten() for v in out.values()])
        assert values.max() - values.min() + 1 <= 25, out
    set_determinism(None)
