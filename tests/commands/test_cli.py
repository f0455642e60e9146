import json

import pytest

from medssl import __version__
from medssl.cli import main


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "pretrain" in capsys.readouterr().out


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["pretrian"]) == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err


def test_list_shows_the_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "simclr" in out and "resnet18" in out and "vit_small" in out and "unet" in out and "ct" in out


@pytest.mark.slow
def test_demo_runs_the_whole_story_offline(tmp_path, capsys):
    """Pretrain, compare pretrained vs scratch fine-tunes, export, load into MONAI: tiny settings."""
    pytest.importorskip("nilearn")
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--data-root", str(tmp_path / "data"), "--seeds", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (out / "pretrain" / "weights" / "backbone.safetensors").is_file()
    trials = json.loads((out / "compare" / "compare.json").read_text())["trials"]
    assert sorted((t["init"], t["label_fraction"]) for t in trials) == [
        ("scratch", 0.1), ("scratch", 1.0), ("simclr", 0.1), ("simclr", 1.0)
    ]  # fmt: skip
    assert "| 0.1 |" in printed and "simclr - scratch" in printed  # the comparison table
    assert (out / "export" / "backbone.safetensors").is_file() and (out / "export" / "model.ts").is_file()
    assert "into monai.networks.nets.resnet.ResNet (missing 0)" in printed
    assert f"exported weights:  {out / 'export'}" in printed
