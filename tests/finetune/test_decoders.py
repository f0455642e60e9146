"""Segmentation decoders over every registered backbone, 2D and 3D, on tiny settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medssl.backbones import build_backbone, list_backbones
from medssl.finetune.decoders import SegmentationNet, UNETRDecoder, level_factors
from tests.backbones.test_contract import TINY

# Multiples of 32 (the default ResNet stride) and of 8 (the tiny ViT patch); non-cubic on purpose.
SHAPES: dict[int, tuple[int, ...]] = {2: (32, 64), 3: (32, 32, 64)}
NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(name: str, dims: int, **extra: object) -> SegmentationNet:
    torch.manual_seed(0)
    options = {**TINY[name](SHAPES[dims]), **extra}
    backbone = build_backbone(name, spatial_dims=dims, in_channels=2, **options)
    return SegmentationNet(backbone, num_classes=NUM_CLASSES, feature_size=4)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list_backbones())
def test_output_at_input_resolution_and_backbone_gets_gradients(name: str, dims: int) -> None:
    net = _net(name, dims)
    x = torch.randn(2, 2, *SHAPES[dims])
    logits = net(x)
    assert logits.shape == (2, NUM_CLASSES, *SHAPES[dims])
    (logits * torch.randn_like(logits)).sum().backward()
    trainable = [(n, p) for n, p in net.backbone.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name}: backbone parameters without gradient: {no_grad[:5]}"


def test_small_input_resnet_keeps_full_resolution_levels() -> None:
    backbone = build_backbone("resnet10", spatial_dims=3, in_channels=1, widen_factor=0.125, small_input=True)
    assert level_factors(backbone) == [(1, 1, 1), (1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    net = SegmentationNet(backbone, num_classes=2, feature_size=4)
    assert net.size_divisor == (8, 8, 8)
    assert net(torch.randn(1, 1, 8, 16, 24)).shape == (1, 2, 8, 16, 24)


def test_anisotropic_stem_stride_is_measured() -> None:
    backbone = build_backbone(
        "resnet10", spatial_dims=3, in_channels=1, widen_factor=0.125, conv1_t_stride=[2, 2, 1]
    )
    net = SegmentationNet(backbone, num_classes=2, feature_size=4)
    assert net.size_divisor == (32, 32, 16)
    assert net(torch.randn(2, 1, 32, 32, 16)).shape == (2, 2, 32, 32, 16)


def test_unet_uses_its_own_decoder_and_freezes_the_unused_head() -> None:
    net = _net("unet", 2)
    assert not any(p.requires_grad for p in net.backbone.final_conv.parameters())  # type: ignore[union-attr]
    decoder_params = sum(p.numel() for p in net.decoder.parameters())
    assert decoder_params == 4 * NUM_CLASSES + NUM_CLASSES  # only the 1x1 conv head is new


def test_unetr_slots_map_shallow_levels_to_fine_resolutions() -> None:
    decoder = UNETRDecoder(
        spatial_dims=2,
        in_channels=1,
        hidden_size=8,
        num_levels=4,
        patch_size=16,
        num_classes=2,
        feature_size=4,
    )
    assert decoder.slot_levels == [0, 1, 2]  # blocks 3, 6, 9 of 12 at /2, /4, /8, as in UNETR


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("resnet10", (32, 48), "multiple of"),
        ("vit_tiny", (32, 32), "must equal img_size"),
    ],
)
def test_wrong_input_size_says_what_fits(name: str, size: tuple[int, ...], message: str) -> None:
    net = _net(name, 2)
    with pytest.raises(ValueError, match=message):
        net(torch.randn(1, 2, *size))


def test_unetr_needs_a_power_of_two_patch() -> None:
    with pytest.raises(ValueError, match="one patch_size on every axis"):
        _net("vit_tiny", 2, patch_size=(8, 16))
    with pytest.raises(ValueError, match="power-of-2 patch_size"):
        UNETRDecoder(spatial_dims=2, in_channels=1, hidden_size=8, num_levels=2, patch_size=12, num_classes=2)
