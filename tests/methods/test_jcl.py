import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from safetensors.torch import load_file
from torch.utils.data import default_collate

from medssl.methods.jcl import JCL
from medssl.ops.contrastive import multi_positive_info_nce, position_positives
from medssl.transforms.views import ViewAugment

FEATURES = [8, 8, 16, 16, 32, 8]
SIZES = {2: 64, 3: (32, 64, 32)}


def _jcl(dims, scale=0.5, size=None, **kwargs):
    torch.manual_seed(0)
    augment = ViewAugment(size=size or SIZES[dims])
    return JCL(
        spatial_dims=dims,
        scale=scale,
        backbone_kwargs={"features": FEATURES},
        augment=augment,
        hidden_dim=16,
        projection_dim=8,
        **kwargs,
    )


def _batch(method, dims, n=4, positions=None):
    views = method.view_transform().set_random_state(seed=0)  # MONAI's shared RNG would vary with test order
    items = [{"image": torch.rand(1, *(48,) * dims)} for _ in range(n)]
    if positions is not None:
        for item, p in zip(items, positions, strict=True):
            item["position"] = p
    return default_collate([views(item) for item in items])


@pytest.mark.parametrize(
    "dims, scale, size",
    [(2, 0.5, 64), (2, 0.25, 128), (2, 0.125, 256), (3, 0.5, 64), (3, 0.25, (64, 128, 64))],
)
def test_both_branches_meet_on_one_grid(dims, scale, size):
    method = _jcl(dims, scale, size)
    full = (
        torch.rand(2, 1, *method.augment.size)
        if not isinstance(size, int)
        else torch.rand(2, 1, *(size,) * dims)
    )
    small = F.interpolate(full, scale_factor=scale, mode="area")
    decoded = method.backbone.decode(method.backbone.forward_features(small), method.num_blocks)
    bottleneck = method.backbone.forward_features(full)[-1]
    assert decoded.shape[2:] == bottleneck.shape[2:]
    assert method.num_blocks == {0.5: 1, 0.25: 2, 0.125: 3}[scale]


def test_views_are_aligned_pairs_at_two_scales():
    method = _jcl(2, 0.5, 64)
    plain = ViewAugment(size=64, intensity=0.0, gamma=(1.0, 1.0), blur_prob=0.0, noise_std=0.0)
    method.augment = plain
    batch = _batch(method, 2, n=2)
    assert batch["view_full"].shape == (2, 1, 64, 64) and batch["view_small"].shape == (2, 1, 32, 32)
    # no intensity change: the small view is exactly the area-downsampled full view (spatially aligned)
    assert torch.allclose(
        F.interpolate(batch["view_full"], scale_factor=0.5, mode="area"), batch["view_small"], atol=1e-5
    )


def test_position_positive_mask():
    assert torch.equal(position_positives(None, 3, 0.1), torch.eye(3, dtype=torch.bool))
    positions = torch.tensor([0.10, 0.15, 0.50, float("nan")])
    assert torch.equal(position_positives(positions, 4, 0.1), torch.eye(4, dtype=torch.bool))  # NaN: unknown
    mask = position_positives(torch.tensor([0.10, 0.15, 0.50]), 3, 0.1)
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert torch.equal(position_positives(torch.tensor([0.1, 0.12]), 2, 0.0), torch.eye(2, dtype=torch.bool))


def test_info_nce_with_instance_positives_is_cross_entropy_both_ways():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.1
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    got = multi_positive_info_nce(a, b, torch.eye(4, dtype=torch.bool), 0.1)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_info_nce_with_two_positives_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    positives = torch.ones(2, 2, dtype=torch.bool)  # everything is a positive
    t = 0.5
    sims = torch.tensor([[1.0, 0.6], [0.0, 0.8]]) / t  # a_i . b_j
    row = -(torch.log_softmax(sims, 1)).mean(1)  # each anchor: mean -log p over both positives
    col = -(torch.log_softmax(sims.T, 1)).mean(1)
    expected = (row.mean() + col.mean()) / 2
    assert multi_positive_info_nce(a, b, positives, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pixel_loss_is_the_mean_of_per_location_losses():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, 4), torch.randn(5, 3, 4)  # (L, B, P)
    eye = torch.eye(3, dtype=torch.bool)
    per_location = [multi_positive_info_nce(a[i], b[i], eye, 0.2) for i in range(5)]
    assert multi_positive_info_nce(a, b, eye, 0.2).item() == pytest.approx(
        torch.stack(per_location).mean().item()
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_terms_weights_and_feature_level_by_hand(dims):
    method = _jcl(dims, weight_image=1.0, weight_pixel=0.5, weight_feature=2.0).eval()
    batch = _batch(method, dims)
    terms = method.compute_loss(batch)
    assert set(terms) == {"image", "pixel", "feature", "loss"}
    assert terms["loss"].item() == pytest.approx(
        (terms["image"] + 0.5 * terms["pixel"] + 2.0 * terms["feature"]).item(), rel=1e-5
    )
    with torch.no_grad():
        full = method.backbone.forward_features(batch["view_full"])[-1]
        small = method.backbone.forward_features(batch["view_small"])[-1]
        pooled = F.avg_pool2d(full, 2) if dims == 2 else F.avg_pool3d(full, 2)  # scale 0.5: 2x2(x2) average
    assert terms["feature"].item() == pytest.approx((small - pooled).abs().mean().item(), rel=1e-5)


def test_a_zero_weight_switches_a_term_off():
    method = _jcl(2, weight_pixel=0.0, weight_feature=0.0)
    terms = method.compute_loss(_batch(method, 2))
    assert set(terms) == {"image", "loss"}
    assert terms["loss"].item() == pytest.approx(terms["image"].item())


def test_positions_widen_the_positives():
    method = _jcl(2, position_threshold=0.2, weight_pixel=0.0, weight_feature=0.0).eval()
    batch = _batch(method, 2, positions=[0.1, 0.15, 0.8, 0.9])
    with_positions = method.compute_loss(batch)["image"]
    batch.pop("position")
    without = method.compute_loss(batch)["image"]
    assert not torch.isclose(with_positions, without)


def test_pixel_locations_are_sampled():
    method = _jcl(3, pixel_locations=3)
    decoded, bottleneck = torch.randn(2, FEATURES[3], 2, 4, 2), torch.randn(2, FEATURES[4], 2, 4, 2)
    small, full = method._pixel_projections(decoded, bottleneck)
    assert small.shape == full.shape == (3, 2, 8)


def test_unused_decoder_blocks_are_frozen_and_marked():
    method = _jcl(2, 0.25, 128)
    assert method.pretrained_decoder_blocks == 2
    trainable = [any(p.requires_grad for p in b.parameters()) for b in method.backbone.decoder_blocks]
    assert trainable == [True, True, False, False]
    assert not any(p.requires_grad for p in method.backbone.final_conv.parameters())


def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="scale must be one of"):
        _jcl(2, scale=0.3)
    with pytest.raises(ValueError, match="multiple of 32"):
        _jcl(2, 0.5, 48)
    with pytest.raises(ValueError, match="encoder-decoder backbone"):
        JCL(spatial_dims=2, backbone="resnet10", augment=ViewAugment(size=64))


def test_loss_falls_on_a_toy_set():
    torch.manual_seed(0)
    method = _jcl(2)
    images = []
    for i in range(8):  # blobs at different places: learnable identities
        image = torch.zeros(1, 48, 48)
        image[:, 4 + 4 * i : 14 + 4 * i, 6 * (i % 4) : 6 * (i % 4) + 20] = 1.0
        images.append(image)
    views = method.view_transform()
    optimiser = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        batch = default_collate([views({"image": image}) for image in images])
        loss = method.compute_loss(batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10  # measured: about 7.0 -> 4.1
    assert last < 0.75 * first, losses


@pytest.mark.parametrize("dims", [2, 3])
def test_encoder_and_decoder_load_into_plain_basic_unet(dims):
    method = _jcl(dims)
    method.compute_loss(_batch(method, dims))["loss"].backward()
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    module, kwargs = method.backbone.monai_spec()
    assert module == "monai.networks.nets.BasicUNet"
    plain = BasicUNet(**kwargs)
    plain.load_state_dict(method.backbone.state_dict(), strict=True)
    x = torch.rand(2, 1, *((64,) * dims if dims == 2 else (32, 64, 32)))
    method.backbone.eval()
    plain.eval()
    with torch.no_grad():
        features = method.backbone.forward_features(x)
        ours = method.backbone.final_conv(method.backbone.decode(features))
        assert torch.equal(ours, plain(x))


@pytest.mark.slow
@pytest.mark.parametrize("dims", [2, 3])
def test_cli_smoke_run_writes_unet_weights(tmp_path, dims):
    from medssl.cli import main
    from medssl.recipes_dir import recipes_dir

    from ..commands.conftest import write_nifti_folder, write_png_folder

    source = (
        write_png_folder(tmp_path / "png", count=8) if dims == 2 else write_nifti_folder(tmp_path / "nii", 8)
    )
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--config",
        str(recipes_dir() / "smoke" / f"jcl_{dims}d.yaml"),
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
        "--trainer.max_epochs",
        "1",
    ]
    assert main(args) == 0
    assert (run / "weights" / "backbone.safetensors").is_file()
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "export")]) == 0
    decoder = load_file(tmp_path / "export" / "decoder.safetensors")
    assert decoder and {key.split(".")[0] for key in decoder} == {"upcat_4"}  # scale 0.5: 1 block
