import pytest
import torch
from monai.networks.nets import BasicUNet
from safetensors.torch import load_file

from medssl.cli import main
from medssl.methods.base import METHODS
from medssl.methods.mim import MIM, masked_voxel_mse, random_patch_mask, visible_mean
from medssl.recipes_dir import recipes_dir
from medssl.transforms.views import ViewAugment

FEATURES = [4, 4, 8, 8, 16, 4]
SIZES = {2: [32, 48], 3: [16, 32, 16]}
PATCHES = {2: [8, 4], 3: [4, 8, 4]}  # anisotropic on purpose


def tiny_mim(spatial_dims, **options):
    return MIM(
        spatial_dims=spatial_dims,
        backbone_kwargs={"features": FEATURES},
        mask_patch=PATCHES[spatial_dims],
        augment=ViewAugment(size=SIZES[spatial_dims]),
        **options,
    )


def images(spatial_dims, batch=3):
    return torch.rand(batch, 1, *SIZES[spatial_dims])


def test_registered():
    assert METHODS.get("mim") is MIM


def test_golden_masked_voxel_loss_and_visible_mean_by_hand():
    target = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # (1, 1, 2, 2)
    pred = torch.tensor([[[[0.0, 0.0], [5.0, 9.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # voxels 1.0 and 7.0 masked
    # masked errors: (0 - 1)^2 = 1 and (9 - 7)^2 = 4; the visible ones (9 and 0) are ignored
    assert masked_voxel_mse(pred, target, mask).item() == pytest.approx(2.5)
    # visible mean (3 + 5) / 2 = 4: masked errors (4 - 1)^2 = 9 and (4 - 7)^2 = 9
    reference = visible_mean(target, mask)
    assert torch.equal(reference, torch.full_like(target, 4.0))
    assert masked_voxel_mse(reference, target, mask).item() == pytest.approx(9.0)


def test_masked_voxel_loss_averages_channels():
    target = torch.zeros(1, 2, 1, 2)
    pred = torch.tensor([[[[2.0, 0.0]], [[4.0, 0.0]]]])  # channel errors 4 and 16 on voxel 0
    mask = torch.tensor([[[[1.0, 0.0]]]])
    assert masked_voxel_mse(pred, target, mask).item() == pytest.approx(10.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_patch_mask_masks_whole_patches_at_the_ratio(spatial_dims):
    shape, patch = (4, 1, *SIZES[spatial_dims]), PATCHES[spatial_dims]
    mask = random_patch_mask(shape, patch, 0.6, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, *SIZES[spatial_dims])
    grid = [s // p for s, p in zip(SIZES[spatial_dims], patch, strict=True)]
    patches = 1
    for g in grid:
        patches *= g
    volume = patches * torch.tensor(patch).prod().item()
    for image in mask:
        assert image.sum().item() == round(patches * 0.6) * volume / patches
        # constant inside each patch: pooling over a patch gives only 0 or 1
        pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
        pooled = pool(image[None], kernel_size=patch)
        assert set(pooled.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(mask[0], mask[1])  # per-image masks


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_network_never_sees_the_masked_voxels(spatial_dims):
    torch.manual_seed(0)
    model = tiny_mim(spatial_dims).eval()
    x = images(spatial_dims)
    pred, mask = model.predict(x, torch.Generator().manual_seed(3))
    changed = x + 5 * torch.rand_like(x) * mask  # new values under the mask only
    pred_changed, mask_again = model.predict(changed, torch.Generator().manual_seed(3))
    assert torch.equal(mask, mask_again)
    assert torch.allclose(pred, pred_changed, atol=1e-6)
    assert pred.shape == x.shape


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_is_the_masked_mse_of_the_prediction_and_gradients_reach_every_decoder_block(spatial_dims):
    torch.manual_seed(0)
    model = tiny_mim(spatial_dims)
    x = images(spatial_dims)
    torch.manual_seed(1)
    terms = model.compute_loss({"view_0": x})
    torch.manual_seed(1)
    pred, mask = model.predict(x)
    assert terms["loss"].item() == pytest.approx(masked_voxel_mse(pred, x, mask).item(), rel=1e-6)
    reference = masked_voxel_mse(visible_mean(x, mask), x, mask)
    assert terms["visible_mean"].item() == pytest.approx(reference.item(), rel=1e-6)
    terms["loss"].backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in model.unet.final_conv.parameters())  # replaced in fine-tuning
    assert model.pretrained_decoder_blocks == 4


def test_refuses_encoder_only_backbones_and_views_off_the_grid(tiny):
    with pytest.raises(ValueError, match="encoder-decoder"):
        MIM(**tiny)
    with pytest.raises(ValueError, match="multiple of mask_patch"):
        MIM(backbone_kwargs={"features": FEATURES}, mask_patch=6, augment=ViewAugment(size=32))
    with pytest.raises(ValueError, match="total stride 16"):
        MIM(backbone_kwargs={"features": FEATURES}, mask_patch=4, augment=ViewAugment(size=24))
    with pytest.raises(ValueError, match="more than one voxel"):
        MIM(
            backbone_kwargs={"features": FEATURES}, spatial_dims=3, mask_patch=4, augment=ViewAugment(size=16)
        )
    with pytest.raises(ValueError, match="mask_ratio"):
        MIM(backbone_kwargs={"features": FEATURES}, mask_ratio=1.0, augment=ViewAugment(size=32))


def test_reconstruction_keeps_visible_voxels_and_marks_masked_ones():
    torch.manual_seed(0)
    model = tiny_mim(2).eval()
    x = images(2, batch=2)
    masked, reconstruction = model.reconstruct(x, seed=5)
    _, mask = model.predict(x, torch.Generator().manual_seed(5))
    hidden = mask.bool().expand_as(x)
    assert torch.isnan(masked[hidden]).all() and torch.equal(masked[~hidden], x[~hidden])
    assert torch.equal(reconstruction[~hidden], x[~hidden])


@pytest.mark.slow
def test_cli_smoke_run_exports_the_whole_unet(tmp_path):
    from ..commands.conftest import write_nifti_folder

    source = write_nifti_folder(tmp_path / "nii", 8)
    run = tmp_path / "run"
    recipe = str(recipes_dir() / "smoke" / "mim_3d.yaml")
    args = [
        "pretrain",
        "--config",
        recipe,
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
    ]
    assert main([*args, "--trainer.max_epochs", "1"]) == 0
    assert len(list((run / "reconstructions").glob("epoch_*.png"))) == 1
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "export")]) == 0
    decoder = load_file(tmp_path / "export" / "decoder.safetensors")
    assert {key.split(".")[0] for key in decoder} == {"upcat_4", "upcat_3", "upcat_2", "upcat_1"}
    plain = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=FEATURES)
    backbone = load_file(tmp_path / "export" / "backbone.safetensors")
    missing, unexpected = plain.load_state_dict(backbone | decoder, strict=False)
    assert not unexpected and {key.split(".")[0] for key in missing} == {"final_conv"}
