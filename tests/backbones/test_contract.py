"""One contract test over every registered backbone, in 2D and 3D, on tiny settings; plus builder errors."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from medssl.backbones import Backbone, EncoderDecoder, build_backbone, list_backbones
from medssl.backbones.resnet import ResNetBackbone
from medssl.backbones.unet import UNetBackbone
from medssl.backbones.vit import ViTBackbone

# Non-square, non-cubic shapes on purpose (catches axis mix-ups); divisible by 16 for the U-Net.
SHAPES: dict[int, tuple[int, ...]] = {2: (32, 48), 3: (16, 32, 48)}
BATCH = 2


def _vit(shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "img_size": shape,
        "patch_size": 8,
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "mlp_dim": 64,
    }


# Tiny options per registered name, given the input's spatial shape. Every registered backbone MUST have an
# entry: test_every_backbone_has_tiny_settings fails otherwise.
TINY: dict[str, Callable[[tuple[int, ...]], dict[str, Any]]] = {
    "resnet10": lambda shape: {"widen_factor": 0.125},
    "resnet18": lambda shape: {"widen_factor": 0.125},
    "resnet34": lambda shape: {"widen_factor": 0.125},
    "resnet50": lambda shape: {"widen_factor": 0.125},
    "vit_tiny": _vit,
    "vit_small": _vit,
    "vit_base": _vit,
    "unet": lambda shape: {"features": (4, 4, 8, 8, 16, 4)},
}

# Parameters that no contract output uses, by name prefix. BasicUNet's final_conv is the plain network's
# segmentation head: kept so state_dict keys match, but neither pool nor decode runs it.
NOT_IN_CONTRACT_OUTPUTS: dict[str, tuple[str, ...]] = {"unet": ("final_conv.",)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and spinning threads are slow on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = [pytest.param(name, dims, id=f"{name}-{dims}d") for name in list_backbones() for dims in (2, 3)]


def _build(name: str, dims: int, in_channels: int = 1) -> Backbone:
    if name not in TINY:
        pytest.fail(f"backbone {name!r} has no entry in TINY (tests/backbones/test_contract.py)")
    torch.manual_seed(0)
    return build_backbone(name, spatial_dims=dims, in_channels=in_channels, **TINY[name](SHAPES[dims]))


def _input(dims: int, in_channels: int = 1) -> Tensor:
    return torch.randn(BATCH, in_channels, *SHAPES[dims], generator=torch.Generator().manual_seed(1))


def _project(t: Tensor) -> Tensor:
    """A scalar that depends on every element with a random weight (a plain sum can have zero gradient)."""
    return (t * torch.randn(t.shape, generator=torch.Generator().manual_seed(2))).sum()


def test_every_backbone_has_tiny_settings() -> None:
    assert set(list_backbones()) == set(TINY)


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_pool_and_forward(name: str, dims: int) -> None:
    bb = _build(name, dims)
    x = _input(dims)
    assert isinstance(bb, Backbone)
    assert (bb.name, bb.spatial_dims, bb.in_channels) == (name, dims, 1)
    assert isinstance(bb, EncoderDecoder) == bb.is_encoder_decoder
    out = bb(x)
    assert out.shape == (BATCH, bb.num_features)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(bb.pool(x), out)


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_every_trainable_parameter_gets_a_gradient(name: str, dims: int) -> None:
    bb = _build(name, dims).train()
    x = _input(dims)
    loss = _project(bb.pool(x))
    if bb.is_encoder_decoder:
        assert isinstance(bb, EncoderDecoder)
        loss = loss + _project(bb.decode(bb.forward_features(x)))
    loss.backward()
    skip = NOT_IN_CONTRACT_OUTPUTS.get(name, ())
    checked = 0
    for pname, p in bb.named_parameters():
        if not p.requires_grad or pname.startswith(skip):
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_forward_features_shapes(name: str, dims: int) -> None:
    bb = _build(name, dims)
    feats = bb.forward_features(_input(dims))
    assert isinstance(feats, list)
    assert [f.shape[1] for f in feats] == bb.feature_channels
    assert bb.feature_channels[-1] == bb.num_features
    for fine, coarse in itertools.pairwise(feats):  # coarsest last: no axis grows
        assert all(c <= f for f, c in zip(fine.shape[2:], coarse.shape[2:], strict=True))
    for f in feats:
        assert f.shape[0] == BATCH and f.ndim == dims + 2
        assert torch.isfinite(f).all()


def _plain_vs_ours(bb: Backbone, plain: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Pairs (ours, plain) that must be equal once the weights are shared."""
    if isinstance(bb, ResNetBackbone):
        return [(bb(x), plain(x))]
    if isinstance(bb, ViTBackbone):
        tokens, hidden = plain(x)  # (B, L, D), per-block (B, L, D)
        plain_levels = [hidden[i] for i in bb.feature_blocks[:-1]] + [tokens]
        grid_levels = [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *bb.grid_size) for t in plain_levels]
        return [(bb(x), tokens.mean(dim=1)), *zip(bb.forward_features(x), grid_levels, strict=True)]
    if isinstance(bb, UNetBackbone):
        return [(bb.final_conv(bb.decode(bb.forward_features(x))), plain(x))]
    raise AssertionError(f"add a plain-forward comparison for {type(bb).__name__} in _plain_vs_ours")


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_state_dict_loads_into_plain_monai_network(name: str, dims: int) -> None:
    bb = _build(name, dims).eval()
    path, kwargs = bb.monai_spec()
    assert path.startswith("monai.networks.nets.")
    assert json.loads(json.dumps(kwargs)) == kwargs
    plain = bb.plain_network().eval()
    assert type(plain).__module__.startswith("monai.") and not isinstance(plain, Backbone)
    assert list(bb.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(bb.state_dict(), strict=True)
    x = _input(dims)
    with torch.no_grad():
        for ours, theirs in _plain_vs_ours(bb, plain, x):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_three_channels_and_deepcopy(name: str, dims: int) -> None:
    bb = _build(name, dims, in_channels=3).eval()
    x = _input(dims, in_channels=3)
    with torch.no_grad():
        out = bb(x)
        assert out.shape == (BATCH, bb.num_features)
        torch.testing.assert_close(copy.deepcopy(bb)(x), out)  # EMA teachers are deep copies


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(KeyError, match="did you mean 'resnet18'"):
        build_backbone("resnet81", spatial_dims=2, in_channels=1)


def test_unknown_option_is_named_with_valid_options() -> None:
    with pytest.raises(TypeError, match=r"'resnet18'.*'widen'.*did you mean 'widen_factor'.*valid options"):
        build_backbone("resnet18", spatial_dims=2, in_channels=1, widen=0.5)


def test_missing_required_option() -> None:
    with pytest.raises(TypeError, match=r"'vit_small' needs option.*img_size"):
        build_backbone("vit_small", spatial_dims=2, in_channels=1)


@pytest.mark.parametrize("dims", [1, 4, True])
def test_bad_spatial_dims(dims: int) -> None:
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        build_backbone("resnet10", spatial_dims=dims, in_channels=1)


def test_vit_img_size_must_be_divisible_by_patch_size() -> None:
    with pytest.raises(ValueError, match=r"not divisible by patch_size \(8, 8, 8\) on axis 2"):
        build_backbone("vit_tiny", spatial_dims=3, in_channels=1, **{**_vit((16, 16, 20)), "patch_size": 8})


def test_vit_anisotropic_patches_and_grid_order() -> None:
    kw = {**_vit((16, 32, 48)), "patch_size": (4, 8, 16)}
    bb = build_backbone("vit_tiny", spatial_dims=3, in_channels=1, **kw)
    assert isinstance(bb, ViTBackbone)
    x = _input(3)
    feats = bb.forward_features(x)
    assert feats[-1].shape == (BATCH, 32, 4, 4, 3)
    conv = bb.patch_embedding.patch_embeddings(x)  # (B, D, *grid)
    tokens = conv.flatten(2).transpose(1, 2)  # (B, L, D), MONAI's token order
    torch.testing.assert_close(bb._to_grid(tokens), conv)
    with pytest.raises(ValueError, match="expected input spatial size"):
        bb(torch.zeros(BATCH, 1, 16, 32, 32))


def test_resnet_small_input_stem() -> None:
    bb = build_backbone("resnet18", spatial_dims=2, in_channels=1, widen_factor=0.125, small_input=True)
    kwargs = bb.monai_spec()[1]
    assert (kwargs["conv1_t_size"], kwargs["conv1_t_stride"], kwargs["no_max_pool"]) == (3, 1, True)
    feats = bb.forward_features(torch.randn(2, 1, 28, 28))
    assert [tuple(f.shape[2:]) for f in feats] == [(28, 28), (28, 28), (14, 14), (7, 7), (4, 4)]
    with pytest.raises(ValueError, match="small_input=True"):
        build_backbone("resnet18", spatial_dims=2, in_channels=1, small_input=True, conv1_t_size=5)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("num_blocks", [0, 1, 2, 3, 4, None])
def test_unet_decode_doubles_the_grid_per_block(dims: int, num_blocks: int | None) -> None:
    bb = _build("unet", dims)
    assert isinstance(bb, EncoderDecoder)
    feats = bb.forward_features(_input(dims))
    out = bb.decode(feats, num_blocks)
    k = 4 if num_blocks is None else num_blocks
    assert tuple(out.shape[2:]) == tuple(s * 2**k for s in feats[-1].shape[2:])
    assert out.shape[1] == ([bb.num_features, *bb.decoder_channels])[k]
    assert len(bb.decoder_blocks) == 4
    with pytest.raises(ValueError, match="num_blocks"):
        bb.decode(feats, 5)
