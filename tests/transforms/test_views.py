import pytest
import torch
from monai.utils import set_determinism

from medssl.transforms.views import ViewAugment, multi_view_transform


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_two_views_have_the_requested_size_and_differ(spatial_dims):
    image = torch.rand((1,) + (20,) * spatial_dims)
    views = multi_view_transform([ViewAugment(size=12)] * 2, spatial_dims)
    out = views({"image": image})
    assert set(out) == {"view_0", "view_1"}
    for key in out:
        assert out[key].shape == (1,) + (12,) * spatial_dims
        assert out[key].dtype == torch.float32
        assert type(out[key]) is torch.Tensor  # no MetaTensor overhead in the training loop
    assert not torch.equal(out["view_0"], out["view_1"])


def test_anisotropic_view_size_and_axis_mismatch():
    out = multi_view_transform([ViewAugment(size=(8, 12, 10))], 3)({"image": torch.rand(1, 16, 16, 16)})
    assert out["view_0"].shape == (1, 8, 12, 10)
    with pytest.raises(ValueError, match="has 2 axes but spatial_dims=3"):
        multi_view_transform([ViewAugment(size=(8, 8))], 3)


def test_views_are_reproducible_with_a_seed():
    image = torch.rand(1, 16, 16)
    outs = []
    for _ in range(2):
        views = multi_view_transform([ViewAugment(size=8)] * 2, 2)
        views.set_random_state(seed=7)
        outs.append(views({"image": image.clone()}))
    assert torch.equal(outs[0]["view_0"], outs[1]["view_0"])
    assert torch.equal(outs[0]["view_1"], outs[1]["view_1"])
    set_determinism(None)


def test_weakest_augment_is_only_a_resize():
    plain = ViewAugment(
        size=16, min_scale=1.0, flip_prob=0.0, intensity=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0
    )
    image = torch.rand(1, 16, 16)
    out = multi_view_transform([plain], 2)({"image": image})
    assert torch.allclose(out["view_0"], image)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flip_axes_flips_only_the_named_axes(spatial_dims):
    fixed = dict(min_scale=1.0, flip_prob=1.0, intensity=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0)
    image = torch.rand((1,) + (6,) * spatial_dims)
    out = multi_view_transform([ViewAugment(size=6, flip_axes=[0], **fixed)], spatial_dims)({"image": image})
    assert torch.allclose(out["view_0"], image.flip(1))  # axis 0 is tensor dim 1, after the channel
    every = multi_view_transform([ViewAugment(size=6, **fixed)], spatial_dims)({"image": image})
    assert torch.allclose(every["view_0"], image.flip(list(range(1, spatial_dims + 1))))
    with pytest.raises(ValueError, match=r"flip_axes \[2\] must be spatial axes 0\.\.1"):
        multi_view_transform([ViewAugment(flip_axes=[2])], 2)


def test_max_scale_bounds_the_crop_side():
    image = torch.arange(100 * 100, dtype=torch.float32).reshape(1, 100, 100)
    fixed = dict(flip_prob=0.0, intensity=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0)
    views = multi_view_transform([ViewAugment(size=20, min_scale=0.2, max_scale=0.2, **fixed)], 2)
    for seed in range(3):
        views.set_random_state(seed=seed)
        view = views({"image": image})["view_0"]
        # a 20 x 20 crop at native scale: neighbours along the last axis differ by 1, rows by 100
        assert torch.equal(view[0, 0, 1:] - view[0, 0, :-1], torch.ones(19))
        assert torch.equal(view[0, 1:, 0] - view[0, :-1, 0], torch.full((19,), 100.0))
    for low, high in [(0.5, 0.4), (0.0, 0.4), (0.1, 1.5)]:
        with pytest.raises(ValueError, match="min_scale <= max_scale"):
            multi_view_transform([ViewAugment(min_scale=low, max_scale=high)], 2)


def _span(views: dict, side: int) -> tuple[int, int]:
    """Rows and columns of a ``side`` x ``side`` arange image that the views cover together."""
    values = torch.cat([v.flatten() for v in views.values()]).long()
    rows, cols = values // side, values % side
    return int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1


def test_views_of_one_region_overlap_inside_its_window():
    side = 100
    image = torch.arange(side * side, dtype=torch.float32).reshape(1, side, side)
    fixed = dict(flip_prob=0.0, intensity=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0)
    augment = ViewAugment(size=15, min_scale=0.5, max_scale=0.5, **fixed)  # 15 px of a 30 px window
    shared = multi_view_transform([augment, augment], 2, region=0.3)
    anywhere = multi_view_transform([ViewAugment(size=15, min_scale=0.15, max_scale=0.15, **fixed)] * 2, 2)
    spans, free_spans = [], []
    for seed in range(10):
        shared.set_random_state(seed=seed)
        anywhere.set_random_state(seed=seed)
        spans.append(_span(shared({"image": image}), side))
        free_spans.append(_span(anywhere({"image": image}), side))
    assert all(rows <= 30 and cols <= 30 for rows, cols in spans), spans
    assert any(rows > 30 or cols > 30 for rows, cols in free_spans), free_spans  # without it: apart
    set_determinism(None)


@pytest.mark.parametrize("region", [0.0, -0.5, 1.5])
def test_bad_view_region_is_rejected(region):
    with pytest.raises(ValueError, match="0 < region <= 1"):
        multi_view_transform([ViewAugment()], 2, region=region)
