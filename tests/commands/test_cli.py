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
def test_demo_runs_offline_and_says_where_the_weights_are(tmp_path, capsys):
    pytest.importorskip("nilearn")
    args = [
        "demo",
        "--out",
        str(tmp_path / "run"),
        "--data-root",
        str(tmp_path / "data"),
        "--trainer.max_steps",
        "2",
        "--data.limit",
        "48",
        "--data.batch_size",
        "8",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"run directory: {tmp_path / 'run'}" in out
    assert (tmp_path / "run" / "weights" / "backbone.safetensors").is_file()
    assert str(tmp_path / "run" / "weights" / "backbone.safetensors") in out
