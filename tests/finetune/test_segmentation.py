"""Segmentation fine-tuning: data pairing and splits, metrics, tiny fits in 2D and 3D, pretrained decoders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from medssl.backbones import build_backbone
from medssl.data.validation import DatalistError
from medssl.export import write_weights
from medssl.export.source import Pretrained, describe
from medssl.finetune.seg_data import SegmentationDataModule, paired_folders, segmentation_datalist
from medssl.finetune.segmentation import SegmentationModule, hd95

TINY_RESNET = {"widen_factor": 0.125, "small_input": True}
TINY_UNET = {"features": (4, 4, 8, 8, 16, 4)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_blobs(root: Path, dims: int, *, count: int = 12, size: int = 32, mask_value: int = 1) -> Path:
    """``images/`` + ``labels/`` of noisy images with one bright ball (class 1); 2D PNG or 3D NIfTI."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (size,) * dims
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    for i in range(count):
        centre = rng.uniform(7, size - 7, dims).reshape(-1, *[1] * dims)
        mask = (((grid - centre) ** 2).sum(0) < rng.uniform(3, 6) ** 2).astype(np.uint8)
        image = np.clip((rng.normal(0.25, 0.1, shape) + 0.6 * mask) * 255, 0, 255).astype(np.uint8)
        if dims == 2:
            Image.fromarray(image).save(root / "images" / f"case_{i:02d}.png")
            Image.fromarray(mask * mask_value).save(root / "labels" / f"case_{i:02d}.png")
        else:
            nib.save(
                nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "images" / f"case_{i:02d}.nii.gz"
            )
            nib.save(nib.Nifti1Image(mask * mask_value, np.eye(4)), root / "labels" / f"case_{i:02d}.nii.gz")
    return root


def write_drive_like(root: Path, size: int = 32) -> Path:
    """DRIVE's layout and names: RGB tif, 0/255 manual gif, 0/255 FOV gif; 4 training and 2 test cases."""
    rng = np.random.default_rng(1)
    for split, numbers in (("training", range(21, 25)), ("test", range(1, 3))):
        for sub in ("images", "1st_manual", "mask"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for n in numbers:
            vessel = np.zeros((size, size), np.uint8)
            vessel[:, size // 2 - 1 : size // 2 + 1] = 255
            rgb = (rng.random((size, size, 3)) * 100).astype(np.uint8) + (vessel[..., None] // 2)
            Image.fromarray(rgb).save(root / split / "images" / f"{n:02d}_{split}.tif")
            Image.fromarray(vessel).save(root / split / "1st_manual" / f"{n:02d}_manual1.gif")
            Image.fromarray(np.full((size, size), 255, np.uint8)).save(
                root / split / "mask" / f"{n:02d}_{split}_mask.gif"
            )
    return root


def _datamodule(source: Path, dims: int, **options: object) -> SegmentationDataModule:
    defaults: dict[str, object] = {
        "spatial_dims": dims,
        "patch_size": (16,) * dims,
        "batch_size": 4,
        "samples_per_image": 2,
        "num_workers": 0,
        "val_fraction": 0.2,
        "test_fraction": 0.25,
    }
    return SegmentationDataModule(source=str(source), **{**defaults, **options})  # type: ignore[arg-type]


def _trainer(tmp_path: Path, steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(tmp_path / "run"),
    )


# --- data --------------------------------------------------------------------------------------
def test_paired_folders_match_drive_names_by_case_number(tmp_path: Path) -> None:
    root = write_drive_like(tmp_path / "DRIVE")
    items = paired_folders(root / "training/images", root / "training/1st_manual", root / "training/mask")
    assert [Path(i["mask"]).name for i in items][:2] == ["21_manual1.gif", "22_manual1.gif"]
    assert all(Path(i["fov"]).name.startswith(Path(i["image"]).name[:2]) for i in items)
    found = segmentation_datalist(root)  # the DRIVE folder itself: official test split kept
    assert {i.get("split") for i in found} == {"test", "train"}


def test_paired_folders_report_an_image_without_mask(tmp_path: Path) -> None:
    root = write_blobs(tmp_path / "blobs", 2, count=3)
    (root / "labels" / "case_01.png").unlink()
    with pytest.raises(DatalistError, match=r"case_01\.png"):
        paired_folders(root / "images", root / "labels")


def test_splits_are_patient_level_and_the_test_split_is_fixed(tmp_path: Path) -> None:
    root = write_blobs(tmp_path / "blobs", 2, count=20, size=16)
    splits = {seed: _datamodule(root, 2, seed=seed).items() for seed in (0, 1)}
    for parts in splits.values():
        ids = [{i["patient_id"] for i in parts[name]} for name in ("train", "val", "test")]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        assert sum(map(len, ids)) == 20 and len(ids[2]) == 5
    assert splits[0]["test"] == splits[1]["test"]  # test_seed, not seed, draws it
    fewer = _datamodule(root, 2, label_fraction=0.25).items()
    assert len(fewer["train"]) == round(0.25 * len(splits[0]["train"]))
    assert fewer["test"] == splits[0]["test"]


def test_drive_like_0_255_masks_are_thresholded_and_fov_kept_for_eval(tmp_path: Path) -> None:
    root = write_drive_like(tmp_path / "DRIVE")
    with pytest.raises(DatalistError, match="mask_threshold"):
        _datamodule(root, 2, in_channels=3).items()
    dm = _datamodule(root, 2, in_channels=3, mask_threshold=128, batch_size=2)
    dm.trainer = _trainer(tmp_path, 1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    test = next(iter(dm.test_dataloader()))
    assert test["image"].shape == (1, 3, 32, 32) and test["fov"].unique().tolist() == [1.0]
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["test"] == ["01_test", "02_test"]


def test_repeats_lengthen_a_few_label_epoch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_drive_like(tmp_path / "DRIVE")
    options = {"in_channels": 3, "mask_threshold": 128, "batch_size": 8, "num_workers": 1}
    sizes = {}
    for repeats in (1, 3):
        dm = _datamodule(root, 2, repeats=repeats, **options)
        dm.trainer = _trainer(tmp_path / str(repeats), 1)
        dm.setup("fit")
        caplog.clear()
        with caplog.at_level("WARNING", logger="medssl.data"):
            sizes[repeats] = len(dm.train_dataloader())
        assert ("one batch per epoch" in caplog.text) == (repeats == 1)  # the hint, only when it applies
    assert sizes == {1: 1, 3: 3}
    dm = _datamodule(root, 2, **{**options, "num_workers": 0})
    dm.trainer = _trainer(tmp_path / "0", 1)
    dm.setup("fit")
    caplog.clear()
    with caplog.at_level("WARNING", logger="medssl.data"):
        dm.train_dataloader()
    assert "one batch per epoch" not in caplog.text  # no workers, nothing to prepare ahead


# --- metrics -----------------------------------------------------------------------------------
def test_hd95_counts_a_missed_class_as_the_diagonal_and_skips_an_absent_one() -> None:
    mask = torch.zeros(2, 3, 8, 6)
    mask[:, 0] = 1
    mask[:, 0, 2:4, 2:4], mask[:, 1, 2:4, 2:4] = 0, 1  # class 1 present, class 2 absent in both images
    pred = mask.clone()
    pred[1, 1], pred[1, 0] = 0, 1  # image 1 misses class 1
    values = hd95(pred, mask)
    assert values[0, 0] == 0 and values[1, 0] == pytest.approx(10.0)  # sqrt(8^2 + 6^2)
    assert values[:, 1].isnan().all()


def test_fov_removes_predictions_outside_it_from_the_metrics() -> None:
    model = SegmentationModule(
        backbone="resnet10", backbone_kwargs=TINY_RESNET, spatial_dims=2, roi_size=(16, 16)
    )
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:8, 4:8] = 1
    fov = torch.ones(1, 1, 16, 16)
    fov[..., 12:, :] = 0
    logits = torch.cat([1 - mask, mask], dim=1)
    logits[:, 1, 12:, :] = 5.0  # vessels "found" outside the field of view
    model.predict_logits = lambda image: logits  # type: ignore[method-assign]
    batch = {"image": torch.zeros(1, 1, 16, 16), "mask": mask, "fov": fov}
    model._evaluate("test", batch)
    assert float(model.dice.aggregate()[0]) == pytest.approx(1.0)
    assert model.auroc is not None and float(model.auroc.compute()) == pytest.approx(1.0)
    model.auroc.reset()
    model._evaluate("test", {k: v for k, v in batch.items() if k != "fov"})  # the false vessels count
    assert float(model.auroc.compute()) < 0.9


def test_sliding_window_covers_images_larger_than_the_patch() -> None:
    torch.manual_seed(0)
    model = SegmentationModule(
        backbone="resnet10", backbone_kwargs=TINY_RESNET, spatial_dims=3, roi_size=(16,) * 3
    )
    model.eval()
    image = torch.randn(1, 1, 24, 40, 16)
    with torch.no_grad():
        logits = model.predict_logits(image)
        assert logits.shape == (1, 2, 24, 40, 16)
        whole = model.net(torch.randn(1, 1, 16, 16, 16))
    assert whole.shape == (1, 2, 16, 16, 16)


# --- fitting -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("dims", "steps", "size"), [(2, 25, 32), (3, 30, 20)])
def test_dice_rises_well_above_chance_in_a_few_steps(
    tmp_path: Path, dims: int, steps: int, size: int
) -> None:
    """Chance (untrained) Dice is ~0.07; measured after the steps: 2D ~0.5-0.7, 3D 0.39 (HD95 3.4 voxels).

    3D learns slower here because the ResNet's batch-norm running statistics (used in eval) lag behind.
    """
    pl.seed_everything(0, verbose=False)
    root = write_blobs(tmp_path / "blobs", dims, size=size, mask_value=255 if dims == 2 else 1)
    dm = _datamodule(root, dims, mask_threshold=128 if dims == 2 else None, batch_size=2)
    model = SegmentationModule(
        backbone="resnet10",
        backbone_kwargs=TINY_RESNET,
        spatial_dims=dims,
        num_classes=2,
        class_names=["blob"],
        feature_size=8,
        lr=1e-2,
        backbone_lr_scale=1.0,
        warmup_epochs=0,
    )
    trainer = _trainer(tmp_path, steps)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert after["test/dice"] > 0.25 and after["test/dice"] > before["test/dice"] + 0.15, (before, after)
    assert after["test/dice_blob"] == after["test/dice"] and np.isfinite(after["test/hd95"])
    assert after["test/auroc"] > before["test/auroc"] + 0.1, (before, after)


# --- pretrained --------------------------------------------------------------------------------
def _unet_export(folder: Path, decoder: list[str]) -> tuple[torch.nn.Module, Path]:
    """A JCL-style export of a tiny 2D BasicUNet whose ``decoder`` blocks were pretrained too."""
    torch.manual_seed(1)
    source = build_backbone("unet", spatial_dims=2, in_channels=1, **TINY_UNET)
    meta = describe(
        source,
        {"backbone_kwargs": TINY_UNET},
        method="jcl",
        data={},
        recipe_sha256="",
        data_manifest_sha256="",
        global_step=1,
        epoch=0,
    )
    return source, write_weights(Pretrained(source, meta, decoder_modules=decoder), folder)


def test_pretrained_unet_decoder_weights_are_loaded(tmp_path: Path) -> None:
    source, export = _unet_export(tmp_path / "export", ["upcat_4", "upcat_3", "upcat_2", "upcat_1"])
    model = SegmentationModule(
        backbone="unet", backbone_kwargs=TINY_UNET, spatial_dims=2, pretrained=str(export)
    )
    assert any(key.startswith("upcat_1.") for key in model.load_report.loaded)
    loaded = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("final_conv."):  # BasicUNet's own head: not used, not pretrained
            assert torch.equal(loaded[key], value), key
    scratch = SegmentationModule(
        backbone="unet", backbone_kwargs=TINY_UNET, spatial_dims=2, pretrained="none"
    )
    assert scratch.load_report.loaded == []


def _lr_of(model: SegmentationModule) -> dict[str, float]:
    lrs = {id(p): group["lr"] for group in model._param_groups() for p in group["params"]}
    return {name: lrs[id(p)] for name, p in model.net.named_parameters() if p.requires_grad}


def test_only_pretrained_tensors_get_the_backbone_lr_scale(tmp_path: Path) -> None:
    """A scratch baseline must not train its backbone at a tenth of the rate (it would look worse)."""
    _, export = _unet_export(tmp_path / "export", ["upcat_4"])  # upcat_3 .. 1 not pretrained
    options = dict(backbone="unet", backbone_kwargs=TINY_UNET, spatial_dims=2, lr=1e-2, backbone_lr_scale=0.1)
    lrs = _lr_of(SegmentationModule(pretrained=str(export), **options))
    assert lrs["backbone.conv_0.conv_0.conv.weight"] == pytest.approx(1e-3)
    assert lrs["backbone.upcat_4.upsample.deconv.weight"] == pytest.approx(1e-3)
    assert lrs["backbone.upcat_1.upsample.deconv.weight"] == pytest.approx(1e-2)  # fresh init
    assert all(lr == pytest.approx(1e-2) for name, lr in lrs.items() if not name.startswith("backbone."))
    scratch = _lr_of(SegmentationModule(pretrained="none", **options))
    assert all(lr == pytest.approx(1e-2) for lr in scratch.values())


# --- frozen encoder ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backbone", "kwargs", "decoder_prefix"),
    [("unet", TINY_UNET, "backbone.upcat_"), ("resnet10", TINY_RESNET, "decoder.")],
)
def test_frozen_encoder_trains_the_decoder_and_head_only(
    tmp_path: Path, backbone: str, kwargs: dict, decoder_prefix: str
) -> None:
    """The encoder's tensors (and its norm statistics) stay as loaded; the decoder and the head move."""
    pl.seed_everything(0, verbose=False)
    root = write_blobs(tmp_path / "blobs", 2, count=6, size=32)
    model = SegmentationModule(
        backbone=backbone,
        backbone_kwargs=kwargs,
        spatial_dims=2,
        mode="frozen_encoder",
        lr=1e-2,
        warmup_epochs=0,
    )
    before = {name: t.clone() for name, t in model.net.state_dict().items()}
    dm = _datamodule(root, 2, batch_size=2, patch_size=(32, 32))
    _trainer(tmp_path, 3).fit(model, datamodule=dm)
    after = model.net.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    trained = {name for name, p in model.net.named_parameters() if p.requires_grad}
    encoder = {n for n in before if n.startswith("backbone.") and not n.startswith("backbone.upcat_")}
    assert encoder and not encoder & moved  # weights and batch-norm running statistics alike
    assert not encoder & trained
    assert any(name.startswith(decoder_prefix) for name in moved) and any("out" in name for name in moved)


def test_an_unknown_segmentation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of finetune, frozen_encoder, got 'linear_probe'"):
        SegmentationModule(backbone="unet", spatial_dims=2, mode="linear_probe")  # type: ignore[arg-type]
