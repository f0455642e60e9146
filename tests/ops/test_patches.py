import math

import pytest
import torch

from medssl.backbones import build_backbone
from medssl.ops.patches import num_visible, patch_grid, patchify, random_masking, unpatchify

CASES = [  # (spatial size, patch size, channels)
    ((16, 16), (4, 4), 1),
    ((8, 12), (2, 4), 2),
    ((16, 16, 16), (4, 4, 4), 1),
    ((8, 16, 16), (4, 8, 8), 1),
    ((4, 8, 12), (2, 4, 2), 2),
]


@pytest.mark.parametrize(("size", "patch", "channels"), CASES)
def test_round_trip_is_exact(size, patch, channels):
    x = torch.randn(3, channels, *size)
    patches = patchify(x, patch)
    grid = patch_grid(size, patch)
    assert patches.shape == (3, math.prod(grid), math.prod(patch) * channels)
    assert torch.equal(unpatchify(patches, patch, grid, channels), x)


def test_patch_values_are_ordered_spatial_first_then_channel():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    first = patchify(x, (2, 2))[0, 0]  # top-left patch: pixels (0,0) (0,1) (1,0) (1,1), channels last
    assert first.tolist() == [0, 16, 1, 17, 4, 20, 5, 21]


@pytest.mark.parametrize(("size", "patch", "channels"), [CASES[1], CASES[3], CASES[4]])
def test_token_order_matches_the_vit_patch_embedding(size, patch, channels):
    """A conv whose output channel k picks patch value k makes ``patch_embedding(x) == patchify(x)``."""
    hidden = math.prod(patch) * channels
    vit = build_backbone(
        "vit_tiny",
        spatial_dims=len(size),
        in_channels=channels,
        img_size=list(size),
        patch_size=list(patch),
        hidden_size=hidden,
        num_layers=1,
        num_heads=2,
        mlp_dim=8,
    )
    embed = vit.patch_embedding
    with torch.no_grad():
        pick = torch.eye(hidden).reshape(hidden, *patch, channels).movedim(-1, 1)  # (D, C, *patch)
        embed.patch_embeddings.weight.copy_(pick)
        embed.patch_embeddings.bias.zero_()
        embed.position_embeddings.zero_()
        x = torch.randn(2, channels, *size)
        torch.testing.assert_close(embed(x), patchify(x, patch))


def test_indivisible_size_raises():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.rand(1, 1, 10, 16), (4, 4))


@pytest.mark.parametrize(("num_patches", "ratio"), [(64, 0.75), (27, 0.6), (10, 0.9), (16, 0.0)])
def test_masking_keeps_round_l_times_one_minus_r_per_sample(num_patches, ratio):
    ids_keep, mask, _ = random_masking(5, num_patches, ratio, generator=torch.Generator().manual_seed(0))
    keep = round(num_patches * (1 - ratio))
    assert ids_keep.shape == (5, keep)
    assert mask.shape == (5, num_patches)
    assert mask.sum(dim=1).tolist() == [num_patches - keep] * 5
    for row in range(5):  # the kept tokens are exactly the unmasked ones
        assert sorted(ids_keep[row].tolist()) == torch.nonzero(mask[row] == 0).flatten().tolist()


def test_masking_differs_per_sample_and_follows_the_generator():
    first = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(1))[1]
    again = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(1))[1]
    assert torch.equal(first, again)
    assert len({tuple(row.tolist()) for row in first}) == 4


def test_restore_permutation_inverts_the_shuffle():
    tokens = torch.randn(3, 20, 5)
    ids_keep, _, ids_restore = random_masking(3, 20, 0.75, generator=torch.Generator().manual_seed(0))
    ids_shuffle = ids_restore.argsort(dim=1)
    assert torch.equal(ids_shuffle[:, : ids_keep.shape[1]], ids_keep)
    shuffled = tokens.gather(1, ids_shuffle.unsqueeze(-1).expand_as(tokens))
    assert torch.equal(shuffled.gather(1, ids_restore.unsqueeze(-1).expand_as(tokens)), tokens)


@pytest.mark.parametrize(("num_patches", "ratio"), [(16, 1.0), (16, -0.1), (4, 0.1), (4, 0.9)])
def test_ratios_that_keep_nothing_or_mask_nothing_raise(num_patches, ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        num_visible(num_patches, ratio)
