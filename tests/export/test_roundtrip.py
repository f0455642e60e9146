"""Every registered backbone, 2D and 3D: checkpoint -> export (all formats) -> load back: same outputs."""

from __future__ import annotations

import json

import monai.networks.nets
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from medssl.backbones import list_backbones
from medssl.export import export, load_pretrained
from medssl.export.formats import check_bundle
from tests.backbones.test_contract import _plain_vs_ours

from .conftest import SHAPES, save_checkpoint, tiny_simclr

CASES = [pytest.param(name, dims, id=f"{name}-{dims}d") for name in list_backbones() for dims in (2, 3)]
ALL_FORMATS = ["safetensors", "torchscript", "onnx", "bundle"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(("name", "dims"), CASES)
def test_export_then_load_matches_the_trained_backbone(tmp_path, name, dims):
    module = tiny_simclr(name, dims)
    backbone = module.backbone
    ckpt = save_checkpoint(module, tmp_path / "last.ckpt")
    full = backbone.is_encoder_decoder  # export the U-Net decoder too, so the full network round-trips
    exports = export(ckpt, tmp_path / "out", formats=ALL_FORMATS, decoder=True if full else None)
    out = tmp_path / "out"

    x = torch.randn(3, 1, *SHAPES[dims], generator=torch.Generator().manual_seed(5))
    net, report = load_pretrained(out)
    assert type(net).__module__.startswith("monai.networks.nets") and not report.missing
    with torch.no_grad():
        for ours, theirs in _plain_vs_ours(backbone, net, x):
            assert (ours - theirs).abs().max() <= 1e-6

        # TorchScript and ONNX Runtime, run here again, independently of the check inside export
        expected = backbone.final_conv(backbone.decode(backbone.forward_features(x))) if full else backbone(x)
        scripted = torch.jit.load(out / "model.ts")(x)
        assert (scripted - expected).abs().max() <= 1e-5
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {"image": x.numpy()})[0]
        assert np.abs(onnx_out - expected.numpy()).max() <= 1e-4
    assert exports["torchscript"]["max_abs_diff"] <= 1e-5 and exports["onnx"]["max_abs_diff"] <= 1e-4

    # straight into the MONAI class, strict, with no medssl involved
    meta = json.loads((out / "medssl.json").read_text())
    cls = getattr(monai.networks.nets, meta["monai_class"].rsplit(".", 1)[1])
    plain = cls(**meta["monai_kwargs"])
    state = load_file(out / "backbone.safetensors")
    if full:
        decoder = load_file(out / "decoder.safetensors")
        assert {k.split(".")[0] for k in decoder} == {
            "upcat_4",
            "upcat_3",
            "upcat_2",
            "upcat_1",
            "final_conv",
        }
        assert not set(decoder) & set(state)
        state.update(decoder)
    plain.load_state_dict(state, strict=True)

    bundle_net = check_bundle(out / "bundle")  # monai.bundle.ConfigParser -> network_def, strict load
    assert type(bundle_net) is cls


def test_medssl_json_describes_the_weights(tmp_path):
    module = tiny_simclr("vit_tiny", 3)
    export(save_checkpoint(module, tmp_path / "m.ckpt"), tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "medssl.json").read_text())
    assert meta["backbone"] == "vit_tiny" and meta["monai_class"] == "monai.networks.nets.ViT"
    assert meta["backbone_kwargs"]["hidden_size"] == 32 and meta["monai_kwargs"]["img_size"] == [16, 32, 32]
    assert (meta["spatial_dims"], meta["in_channels"], meta["view_size"]) == (3, 1, 16)
    assert meta["files"] == {
        "encoder": "backbone.safetensors",
        "decoder": None,
        "decoder_modules": [],
        "not_pretrained_modules": [],
    }
    assert {"torch", "monai", "medssl", "safetensors"} <= set(meta["versions"])
    assert "load_pretrained" in (tmp_path / "out" / "README.md").read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md",
        "backbone.safetensors",
        "medssl.json",
    ]
