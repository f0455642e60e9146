"""load_backbone_weights: every source kind loads; every mismatch is refused with a message naming it."""

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medssl.backbones import Backbone, build_backbone
from medssl.export import write_weights
from medssl.export.source import from_module
from medssl.finetune.pretrained import PretrainedWeightsError, load_backbone_weights, summary

TINY = {"widen_factor": 0.125, "small_input": True}
UNET = {"features": (4, 4, 8, 8, 16, 4)}


class _Pretraining(nn.Module):
    """Stands in for an SSL method: ``.backbone`` + ``.hparams`` (and how many decoder blocks it trains)."""

    pretrained_decoder_blocks = 0

    def __init__(self, name: str, dims: int = 2, channels: int = 1, **kwargs: Any) -> None:
        super().__init__()
        self.backbone = build_backbone(name, spatial_dims=dims, in_channels=channels, **kwargs)
        for p in self.backbone.parameters():  # not the fresh init of a second backbone
            nn.init.normal_(p)
        self.hparams = {
            "backbone": name,
            "backbone_kwargs": kwargs,
            "spatial_dims": dims,
            "in_channels": channels,
        }


class _DecoderPretraining(_Pretraining):
    pretrained_decoder_blocks = 2  # upcat_4 and upcat_3; upcat_2, upcat_1 and final_conv stay fresh


def _export(module: nn.Module, folder: Path) -> Path:
    meta = dict(data={}, images=None, recipe_sha256="test", global_step=1, epoch=0)
    return write_weights(from_module(module, **meta), folder)


def _checkpoint(module: _Pretraining, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.{k}": v for k, v in module.backbone.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": module.hparams, "global_step": 1}, path)
    return path


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _fresh(name: str = "resnet10", dims: int = 2, channels: int = 1, **kwargs: Any) -> Backbone:
    return build_backbone(name, spatial_dims=dims, in_channels=channels, **(kwargs or TINY))


@pytest.mark.parametrize("kind", ["export", "checkpoint", "run_ckpt", "run_weights"])
def test_every_source_kind_loads(tmp_path: Path, kind: str) -> None:
    pretraining = _Pretraining("resnet10", **TINY)
    source = {
        "export": lambda: _export(pretraining, tmp_path / "export"),
        "checkpoint": lambda: _checkpoint(pretraining, tmp_path / "model.ckpt"),
        "run_ckpt": lambda: _checkpoint(pretraining, tmp_path / "run/checkpoints/last.ckpt").parent.parent,
        "run_weights": lambda: _export(pretraining, tmp_path / "run/weights").parent,
    }[kind]()
    backbone = _fresh()
    report = load_backbone_weights(backbone, source)
    assert _same(backbone, pretraining.backbone)
    assert report.loaded == sorted(backbone.state_dict()) and not report.missing and not report.unexpected
    assert f"loaded {len(report.loaded)} tensors, missing 0, unexpected 0" in summary(report)


@pytest.mark.parametrize("source", [None, "none", "None"])
def test_scratch_leaves_the_backbone(source: str | None) -> None:
    backbone = _fresh()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    report = load_backbone_weights(backbone, source)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert "scratch" in summary(report)


@pytest.mark.parametrize(
    ("fresh", "message"),
    [
        (dict(dims=3), "spatial_dims: pretrained 2, here 3"),
        (dict(channels=3), "in_channels: pretrained 1, here 3"),
        (dict(name="resnet18"), "backbone: pretrained 'resnet10', here 'resnet18'"),
        (dict(widen_factor=0.25, small_input=True), "differing settings: widen_factor"),
        (dict(widen_factor=0.125), r"shape conv1.weight: pretrained \(8, 1, 3, 3\), here \(8, 1, 7, 7\)"),
    ],
)
def test_mismatch_is_refused(tmp_path: Path, fresh: dict, message: str) -> None:
    source = _export(_Pretraining("resnet10", **TINY), tmp_path / "export")
    with pytest.raises(PretrainedWeightsError, match=message):
        load_backbone_weights(_fresh(**fresh), source)


def test_missing_and_extra_vit_blocks_are_refused(tmp_path: Path) -> None:
    vit = {"img_size": 16, "patch_size": 8, "hidden_size": 32, "num_heads": 2, "mlp_dim": 64}
    source = _export(_Pretraining("vit_tiny", num_layers=2, **vit), tmp_path / "export")
    with pytest.raises(PretrainedWeightsError, match=r"not in the pretrained weights: blocks\.2"):
        load_backbone_weights(_fresh("vit_tiny", num_layers=3, **vit), source)
    with pytest.raises(PretrainedWeightsError, match=r"not in the fine-tuning backbone: blocks\.1"):
        load_backbone_weights(_fresh("vit_tiny", num_layers=1, **vit), source)


def test_unreadable_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match=r"junk\.ckpt"):
        load_backbone_weights(_fresh(), tmp_path / "junk.ckpt")
    with pytest.raises(PretrainedWeightsError, match="expected an export folder"):
        load_backbone_weights(_fresh(), tmp_path / "nowhere")


@pytest.mark.parametrize("decoder_pretrained", [True, False])
def test_encoder_decoder_loads_the_pretrained_decoder_blocks(
    tmp_path: Path, decoder_pretrained: bool
) -> None:
    pretraining = (_DecoderPretraining if decoder_pretrained else _Pretraining)("unet", **UNET)
    source = _export(pretraining, tmp_path / "export")
    backbone = _fresh("unet", **UNET)
    report = load_backbone_weights(backbone, source)
    loaded_blocks = {k.split(".")[0] for k in report.loaded if k.startswith("upcat_")}
    fresh_blocks = {k.split(".")[0] for k in report.missing}
    assert loaded_blocks == ({"upcat_4", "upcat_3"} if decoder_pretrained else set())
    assert fresh_blocks == {"upcat_2", "upcat_1", "final_conv"} | ({"upcat_4", "upcat_3"} - loaded_blocks)
    reference = pretraining.backbone.state_dict()
    assert all(torch.equal(backbone.state_dict()[k], reference[k]) for k in report.loaded)
