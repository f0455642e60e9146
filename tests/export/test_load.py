"""load_pretrained's explicit adaptations, refusal of code-running pickles, decoder splits, atomic writes."""

from __future__ import annotations

import json
import os

import pytest
import torch

from medssl.export import ExportError, adapt_channels, export, load_pretrained, write_weights
from medssl.export import formats as export_formats
from medssl.export.source import from_module
from medssl.methods.jcl import JCL
from medssl.transforms.views import ViewAugment

from .conftest import SHAPES, save_checkpoint, tiny_simclr


@pytest.fixture
def resnet_export(tmp_path):
    module = tiny_simclr("resnet10", 2)
    export(save_checkpoint(module, tmp_path / "m.ckpt"), tmp_path / "out")
    return module, tmp_path / "out"


@pytest.mark.parametrize(("mode", "channels"), [("repeat", 3), ("repeat", 2), ("average", 3), ("average", 1)])
def test_channel_adaptation_keeps_the_response_to_a_repeated_image(tmp_path, mode, channels):
    module = tiny_simclr("resnet10", 2, in_channels=2 if channels == 1 else 1)
    export(save_checkpoint(module, tmp_path / "m.ckpt"), tmp_path / "out")
    net, report = load_pretrained(tmp_path / "out", in_channels=channels, channel_adapt=mode)
    assert report.adaptations == [f"conv1.weight: {mode} {module.in_channels} -> {channels} input channels"]
    grey = torch.randn(2, 1, *SHAPES[2])
    with torch.no_grad():
        expected = module.backbone(grey.expand(-1, module.in_channels, -1, -1))
        torch.testing.assert_close(net(grey.expand(-1, channels, -1, -1)), expected, atol=1e-5, rtol=1e-4)


def test_adapt_channels_by_hand():
    weight = torch.arange(4.0).view(1, 2, 2, 1)  # (O=1, C=2, 2, 1): channel 0 = [0, 1], channel 1 = [2, 3]
    repeated = adapt_channels(weight, 3, "repeat")  # channels 0, 1, 0: channel 0 is used twice -> halved
    torch.testing.assert_close(repeated[0, :, :, 0], torch.tensor([[0.0, 0.5], [2.0, 3.0], [0.0, 0.5]]))
    averaged = adapt_channels(weight, 4, "average")  # (c0 + c1) / 4 everywhere
    torch.testing.assert_close(averaged[0, :, :, 0], torch.tensor([[0.5, 1.0]] * 4))
    with pytest.raises(ExportError, match="use 'average'"):
        adapt_channels(weight, 1, "repeat")


def test_a_channel_mismatch_without_adaptation_is_an_error(resnet_export):
    with pytest.raises(
        ExportError, match=r"in_channels=1, asked for 3: pass channel_adapt='repeat' or 'average'"
    ):
        load_pretrained(resnet_export[1], in_channels=3)


def test_img_size_only_for_vits(resnet_export):
    with pytest.raises(ExportError, match="img_size applies to ViT backbones only"):
        load_pretrained(resnet_export[1], img_size=64)


@pytest.mark.parametrize("dims", [2, 3])
def test_vit_position_embeddings_are_interpolated_on_request(tmp_path, dims):
    module = tiny_simclr("vit_tiny", dims)
    export(save_checkpoint(module, tmp_path / "m.ckpt"), tmp_path / "out")
    old = SHAPES[dims]
    new = tuple(2 * s for s in old)
    net, report = load_pretrained(tmp_path / "out", img_size=new)
    assert report.adaptations and "interpolated" in report.adaptations[0]
    pos = net.patch_embedding.position_embeddings  # (1, L, D)
    grid = [s // 8 for s in new]  # patch size 8
    assert pos.shape[1] == torch.Size(grid).numel()
    tokens, _ = net(torch.randn(1, 1, *new))
    assert tokens.shape == (1, pos.shape[1], 32)
    # the same size gives back the same weights
    same, _ = load_pretrained(tmp_path / "out", img_size=old)
    torch.testing.assert_close(
        same.patch_embedding.position_embeddings, module.backbone.patch_embedding.position_embeddings
    )
    with pytest.raises(ExportError, match="divisible by patch_size"):
        load_pretrained(tmp_path / "out", img_size=tuple(s + 4 for s in old))


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    from medssl.cli import main

    marker = tmp_path / "pwned"
    module = tiny_simclr("resnet10", 2)
    bad = tmp_path / "run" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"x": _RunsCode(str(marker))}}, bad)
    with pytest.raises(ExportError, match=r"refused to load.*could run code.*GLOBAL posix.system"):
        load_pretrained(bad)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_partly_pretrained_decoder_goes_to_decoder_safetensors(tmp_path):
    """JCL at scale 0.25 trains the 2 coarsest U-Net blocks: only those are exported as decoder."""
    module = JCL(
        spatial_dims=2,
        scale=0.25,
        backbone_kwargs={"features": [4, 4, 8, 8, 16, 4]},
        augment=ViewAugment(size=128),
        hidden_dim=8,
        projection_dim=4,
    )
    assert module.pretrained_decoder_blocks == 2
    pretrained = from_module(module, data={}, images=None, recipe_sha256="x", global_step=1, epoch=0)
    write_weights(pretrained, tmp_path / "w")
    meta = json.loads((tmp_path / "w" / "medssl.json").read_text())
    assert meta["files"]["decoder_modules"] == ["upcat_4", "upcat_3"]
    assert meta["files"]["not_pretrained_modules"] == ["final_conv", "upcat_1", "upcat_2"]
    net, report = load_pretrained(tmp_path / "w")
    assert report.missing and {k.split(".")[0] for k in report.missing} == {
        "final_conv",
        "upcat_1",
        "upcat_2",
    }
    state = module.backbone.state_dict()
    for key in ("upcat_4.upsample.deconv.weight", "conv_0.conv_0.conv.weight"):
        torch.testing.assert_close(net.state_dict()[key], state[key])
    assert (
        "strict=False  # not pretrained: final_conv, upcat_1, upcat_2"
        in (tmp_path / "w" / "README.md").read_text()
    )


def test_a_failed_check_leaves_no_file(tmp_path, monkeypatch):
    module = tiny_simclr("resnet10", 2)
    ckpt = save_checkpoint(module, tmp_path / "m.ckpt")
    monkeypatch.setattr(export_formats, "ONNX_TOL", -1.0)  # every ONNX check now fails
    with pytest.raises(ExportError, match=r"ONNX export of resnet10 failed its check.*nothing was written"):
        export(ckpt, tmp_path / "out", formats=["onnx"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export(tmp_path, tmp_path / "out", formats=["tflite"])
    with pytest.raises(ExportError, match="expected an export folder"):
        load_pretrained(tmp_path / "nothing")
