"""Per-sample reseeding in place gives exactly the views that ``set_random_state`` on every transform gave."""

import numpy as np
import pytest
import torch

from medssl.data.resumable import SeededItems, randomizables
from medssl.transforms.aligned import aligned_pair_transform
from medssl.transforms.multicrop import multi_crop_transform
from medssl.transforms.views import ViewAugment, multi_view_transform

AUGMENT = ViewAugment(size=8, min_scale=0.5, blur_prob=0.5)


class Images(torch.utils.data.Dataset):
    def __init__(self, transform, dims):
        self.transform = transform
        generator = torch.Generator().manual_seed(0)
        self.images = [torch.rand((1,) + (16,) * dims, generator=generator) for _ in range(3)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform({"image": self.images[index].clone()})


def set_random_state_everywhere(dataset, seed, key):
    """What ``SeededItems`` did before: a new ``RandomState`` per transform (and per child of each)."""
    number, index = key
    transforms = randomizables(dataset.transform)
    seeds = np.random.SeedSequence([seed, number, index]).generate_state(len(transforms))
    for transform, value in zip(transforms, seeds, strict=True):
        transform.set_random_state(seed=int(value))
    return dataset[index]


TRANSFORMS = {
    "views": lambda dims: multi_view_transform([AUGMENT, AUGMENT], dims, region=0.75),
    "multicrop": lambda dims: multi_crop_transform(AUGMENT, ViewAugment(size=4, min_scale=0.2), 2, dims),
    "aligned": lambda dims: aligned_pair_transform(AUGMENT, 0.5, dims),
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_in_place_reseeding_gives_the_views_set_random_state_gave(name, dims):
    fast = SeededItems(Images(TRANSFORMS[name](dims), dims), seed=3)
    slow = Images(TRANSFORMS[name](dims), dims)
    keys = [(0, 0), (0, 2), (5, 2), (0, 0)]
    got = [fast[key] for key in keys]
    for key, views in zip(keys, got, strict=True):
        expected = set_random_state_everywhere(slow, 3, key)
        assert views.keys() == expected.keys()
        for view in views:
            assert torch.equal(torch.as_tensor(views[view]), torch.as_tensor(expected[view])), (key, view)
    first_view = next(iter(got[0]))
    assert not torch.equal(got[1][first_view], got[2][first_view])  # another pass: other views
