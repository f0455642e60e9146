import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from medssl.backbones import build_backbone
from medssl.cli import main

from .conftest import smoke_args

pytestmark = pytest.mark.slow


def _global_step(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pretrain_writes_a_complete_run(tmp_path, png_folder, nifti_folder, spatial_dims):
    source = png_folder if spatial_dims == 2 else nifti_folder
    run = tmp_path / "run"
    assert main(smoke_args(spatial_dims, source, run)) == 0
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert any(r.get("train/loss_step") for r in rows) and any(r.get("val/loss") for r in rows)
    meta = json.loads((run / "weights" / "medssl.json").read_text())
    assert meta["method"] == "simclr" and meta["spatial_dims"] == spatial_dims
    plain = build_backbone(
        meta["backbone"],
        spatial_dims=spatial_dims,
        in_channels=1,
        **{"widen_factor": 0.125, "small_input": True},
    ).plain_network()
    plain.load_state_dict(load_file(run / "weights" / "backbone.safetensors"), strict=True)


def test_resume_from_last_continues_at_the_right_step(tmp_path, png_folder):
    run = tmp_path / "run"
    assert main(smoke_args(2, png_folder, run, "--trainer.max_epochs", "1")) == 0
    steps_per_epoch = _global_step(run / "checkpoints" / "last.ckpt")
    assert steps_per_epoch > 0
    assert main(smoke_args(2, png_folder, run, "--trainer.max_epochs", "3", "--ckpt_path", "last")) == 0
    assert _global_step(run / "checkpoints" / "last.ckpt") == 3 * steps_per_epoch
    epochs = {r["epoch"] for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss_epoch")}
    assert epochs == {"0", "1", "2"}  # the resumed run logged epochs 1 and 2, not 0 again


def test_a_second_run_in_the_same_folder_is_refused(tmp_path, png_folder, capsys):
    run = tmp_path / "run"
    assert main(smoke_args(2, png_folder, run, "--trainer.max_epochs", "1")) == 0
    assert main(smoke_args(2, png_folder, run)) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_without_a_checkpoint_is_refused(tmp_path, png_folder, capsys):
    assert main(smoke_args(2, png_folder, tmp_path / "new", "--ckpt_path", "last")) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_print_config_shows_the_resolved_recipe(tmp_path, png_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(smoke_args(2, png_folder, tmp_path / "run", "--print_config"))
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: medssl.methods.SimCLR" in printed
    assert "save_last: true" in printed  # from recipes/base/pretrain.yaml
    assert "spatial_dims: 2" in printed
    assert not (tmp_path / "run").exists()
