import math

import nibabel as nib
import numpy as np
import pytest
import torch
from lightly.models.utils import get_at_index
from monai.networks.nets import ViT
from PIL import Image

from medssl.cli import main
from medssl.methods.base import METHODS
from medssl.methods.mae import MAE, flat_patches, masked_patch_mse
from medssl.ops.patches import patchify, random_masking
from medssl.recipes_dir import recipes_dir
from medssl.transforms.views import ViewAugment

SIZES = {2: [32, 32], 3: [16, 16, 16]}
PATCHES = {2: [8, 8], 3: [4, 8, 8]}  # anisotropic in 3D: grid (4, 2, 2)


def tiny_mae(spatial_dims, **options):
    vit = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}
    vit.update(img_size=SIZES[spatial_dims], patch_size=PATCHES[spatial_dims])
    options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, **options}
    return MAE(spatial_dims=spatial_dims, backbone="vit_tiny", backbone_kwargs=vit, **options)


def images(spatial_dims, batch=3):
    return torch.rand(batch, 1, *SIZES[spatial_dims])


def reference_loss(pred, target, mask, eps=1e-6):
    """MAE paper loss written out per patch: normalise each target patch, MSE, average over masked ones."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            if mask[b, i] == 0:
                continue
            t = target[b, i].double()
            n = t.numel()
            mean = t.sum() / n
            var = ((t - mean) ** 2).sum() / (n - 1)  # unbiased, as torch.var in the MAE code
            normed = (t - mean) / math.sqrt(var + eps)
            total += ((pred[b, i].double() - normed) ** 2).sum().item() / n
            count += 1
    return total / count


def test_registered():
    assert METHODS.get("mae") is MAE


def test_golden_masked_patch_loss_on_tiny_tensors():
    target = torch.tensor(
        [[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]], [[5.0, 5.0, 5.0, 9.0], [1.0, 0.0, 1.0, 0.0]]]
    )
    pred = torch.tensor(
        [[[0.0, 0.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]], [[0.5, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]]
    )
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # By hand (unbiased variance, as the MAE code): patch (0,0) var 5/3, z = (-1.1619, -.3873, .3873, 1.1619),
    # MSE 0.475405; (0,1) var 4/3, z = 0.866025 * (-1, -1, 1, 1), MSE 0.017949; (1,0) var 4,
    # z = (-.5, -.5, -.5, 1.5), MSE 3.75 / 4; (1,1) is visible and ignored.
    expected = (0.475405 + 0.017949 + 0.9375) / 3
    assert reference_loss(pred, target, mask) == pytest.approx(expected, rel=1e-5)
    assert masked_patch_mse(pred, target, mask).item() == pytest.approx(expected, rel=1e-5)
    plain = ((pred - target) ** 2).mean(-1)[mask.bool()].mean()
    assert masked_patch_mse(pred, target, mask, norm_pix=False).item() == pytest.approx(plain.item())


def test_flat_patch_reference_by_hand():
    target = torch.tensor([[[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]]])  # (1, 3 patches, 2 pixels)
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last patch is visible
    # normalised (unbiased variance 2), patch 0 is (-1, 1) / sqrt(2): MSE 0.5 against zero; patch 1 is
    # constant, hence 0 once normalised: the mean over the two masked patches is 0.25
    loss = masked_patch_mse(flat_patches(target, mask), target, mask)
    assert loss.item() == pytest.approx(0.25, rel=1e-5)
    # raw pixels: flat at the mean of the visible patch (2.0): patch 0 MSE 1, patch 1 MSE 0
    raw = flat_patches(target, mask, norm_pix=False)
    assert torch.equal(raw, torch.full_like(target, 2.0))
    assert masked_patch_mse(raw, target, mask, norm_pix=False).item() == pytest.approx(0.5)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_logged_flat_patch_reference_is_the_loss_of_flat_predictions(norm_pix_loss):
    torch.manual_seed(0)
    model = tiny_mae(2, norm_pix_loss=norm_pix_loss).eval()
    x = images(2)
    torch.manual_seed(1)
    terms = model.compute_loss({"view_0": x})
    torch.manual_seed(1)
    _, target, mask = model.predict_patches(x)
    expected = masked_patch_mse(flat_patches(target, mask, norm_pix_loss), target, mask, norm_pix_loss)
    assert terms["flat_patches"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert not terms["flat_patches"].requires_grad


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_model_loss_is_the_masked_normalised_mse_of_its_predictions(spatial_dims):
    torch.manual_seed(0)
    model = tiny_mae(spatial_dims).eval()
    x = images(spatial_dims)
    torch.manual_seed(1)
    loss = model.compute_loss({"view_0": x})["loss"]
    torch.manual_seed(1)
    pred, target, mask = model.predict_patches(x)
    assert torch.equal(target, patchify(x, PATCHES[spatial_dims]))
    assert loss.item() == pytest.approx(reference_loss(pred.detach(), target, mask), rel=1e-5)


def test_changing_predictions_on_visible_patches_does_not_change_the_loss():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    mask = (torch.rand(2, 16) < 0.75).float()
    changed = pred + 10 * torch.randn_like(pred) * (1 - mask).unsqueeze(-1)
    assert masked_patch_mse(changed, target, mask) == masked_patch_mse(pred, target, mask)
    grad = torch.autograd.grad(masked_patch_mse(pred.requires_grad_(), target, mask), pred)[0]
    assert torch.all(grad[mask == 0] == 0) and torch.all(grad[mask == 1].abs().sum(-1) > 0)


@pytest.mark.parametrize(("spatial_dims", "ratio"), [(2, 0.75), (3, 0.75), (2, 0.9)])
def test_encoder_blocks_see_only_the_visible_patches(spatial_dims, ratio):
    model = tiny_mae(spatial_dims, mask_ratio=ratio)
    seen = []
    model.backbone.blocks[0].register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))
    model.compute_loss({"view_0": images(spatial_dims)})
    assert seen == [(3, round(16 * (1 - ratio)), 32)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoding_every_patch_matches_the_backbones_own_forward(spatial_dims):
    """Same tokens, position embeddings and blocks as the ViT: only the token order is shuffled."""
    model = tiny_mae(spatial_dims, mask_ratio=0.0).eval()
    x = images(spatial_dims)
    ids_keep, _, ids_restore = random_masking(3, 16, 0.0)
    latent = get_at_index(model.encode_visible(x, ids_keep), ids_restore)  # (B, L, D), patch order
    full = model.backbone.forward_features(x)[-1].flatten(2).transpose(1, 2)  # (B, L, D)
    torch.testing.assert_close(latent, full)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_trainable_parameter_gets_a_gradient(spatial_dims):
    model = tiny_mae(spatial_dims)
    model.compute_loss({"view_0": images(spatial_dims)})["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_mask_ratio_zero_is_a_plain_autoencoder_on_all_patches():
    model = tiny_mae(2, mask_ratio=0.0)
    loss = model.compute_loss({"view_0": images(2)})["loss"]
    assert torch.isfinite(loss) and loss > 0


def test_backbone_state_dict_loads_into_plain_monai_vit():
    model = tiny_mae(3)
    plain = model.backbone.plain_network()
    assert isinstance(plain, ViT)
    plain.load_state_dict(model.backbone.state_dict(), strict=True)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruction_keeps_visible_patches_and_blanks_masked_ones(spatial_dims):
    model = tiny_mae(spatial_dims).eval()
    x = images(spatial_dims, batch=2)
    masked, reconstruction = model.reconstruct(x)
    assert masked.shape == reconstruction.shape == x.shape
    visible = ~patchify(masked, PATCHES[spatial_dims]).isnan().any(-1)  # (B, L)
    assert visible.sum(1).tolist() == [4, 4]  # 16 patches, ratio 0.75
    kept = patchify(reconstruction, PATCHES[spatial_dims])[visible]
    assert torch.allclose(kept, patchify(x, PATCHES[spatial_dims])[visible])
    torch.testing.assert_close(model.reconstruct(x), (masked, reconstruction), equal_nan=True)  # seeded


def test_view_transform_gives_one_view_of_the_vit_size():
    model = tiny_mae(3)
    out = model.view_transform()({"image": torch.rand(1, 20, 24, 18)})
    assert set(out) == {"view_0"} and out["view_0"].shape == (1, 16, 16, 16)


def test_view_size_other_than_the_vit_img_size_is_refused():
    with pytest.raises(ValueError, match="must equal the ViT img_size"):
        tiny_mae(2, augment=ViewAugment(size=28))


def test_non_vit_backbone_is_refused():
    with pytest.raises(ValueError, match="MAE needs a ViT backbone"):
        MAE(backbone="resnet10", backbone_kwargs={"widen_factor": 0.125})


def test_ratio_that_masks_nothing_is_refused():
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(2, mask_ratio=0.01)


def _write_images(folder, spatial_dims, count=8):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        if spatial_dims == 2:
            Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / f"img_{i}.png")
        else:
            volume = rng.random((20, 20, 20), dtype=np.float32)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"vol_{i}.nii.gz")
    return folder


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_smoke_run_writes_weights_and_reconstruction_figures(tmp_path, spatial_dims):
    source = _write_images(tmp_path / "images", spatial_dims)
    run = tmp_path / "run"
    recipe = recipes_dir() / "smoke" / f"mae_{spatial_dims}d.yaml"
    args = ["pretrain", "--config", str(recipe), "--data.source", str(source)]
    assert main([*args, "--trainer.default_root_dir", str(run), "--loggers+", "tensorboard"]) == 0
    assert (run / "weights" / "backbone.safetensors").is_file()
    figures = sorted(p.name for p in (run / "reconstructions").iterdir())
    assert figures == [
        "epoch_000.png",
        "epoch_001.png",
    ]  # one per validation epoch, none for the sanity check
    with Image.open(run / "reconstructions" / "epoch_001.png") as png:
        assert png.width > 100 and png.height > 100
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and any(b"val/reconstructions" in e.read_bytes() for e in events)
