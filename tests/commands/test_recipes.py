"""Every shipped recipe parses, and each fine-tuning recipe fits the pretraining recipe it names."""

from pathlib import Path

import pytest
import yaml

from medssl.cli import main
from medssl.recipes_dir import recipes_dir

RECIPES = recipes_dir()
PRETRAIN = sorted((RECIPES / "pretrain").glob("*.yaml")) + sorted((RECIPES / "demo").glob("simclr_*.yaml"))
FINETUNE = sorted((RECIPES / "finetune").glob("*.yaml")) + sorted((RECIPES / "demo").glob("seg_*.yaml"))


def _print_config(command: str, recipe: Path, capsys, *extra: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", str(recipe), *extra, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", PRETRAIN, ids=lambda p: p.stem)
def test_pretraining_recipes_parse(recipe: Path, capsys) -> None:
    config = _print_config("pretrain", recipe, capsys)
    assert config["model"]["class_path"].startswith("medssl.methods")
    dims = 2 if recipe.stem.endswith("_2d") else 3
    assert config["data"]["spatial_dims"] == dims, "the file name says 2d/3d: so must the recipe"


@pytest.mark.parametrize("recipe", FINETUNE, ids=lambda p: p.stem)
def test_finetuning_recipes_parse_and_match_their_pretraining(recipe: Path, capsys) -> None:
    config = _print_config("finetune", recipe, capsys)
    pretrained = config["model"]["pretrained"]
    if not pretrained or pretrained == "none":
        return
    source = RECIPES / "pretrain" / f"{Path(pretrained).name}.yaml"
    assert source.is_file(), f"{recipe.name} names {pretrained}, but no recipe {source.name} makes it"
    method = yaml.safe_load(source.read_text())["model"]["init_args"]
    assert method["backbone"] == config["model"]["backbone"]
    assert (method.get("backbone_kwargs") or {}) == (config["model"]["backbone_kwargs"] or {})
    assert yaml.safe_load(source.read_text())["data"]["spatial_dims"] == config["data"]["spatial_dims"]


def test_segmentation_recipes_take_the_frozen_encoder_mode_and_only_theirs(capsys) -> None:
    recipe = RECIPES / "finetune" / "seg_unet_hippocampus_3d.yaml"
    config = _print_config("finetune", recipe, capsys, "--model.mode", "frozen_encoder")
    assert config["model"]["mode"] == "frozen_encoder"
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--config", str(recipe), "--model.mode", "linear_probe", "--print_config"])
    assert exit_info.value.code == 2
    assert "Expected a typing.Literal['finetune', 'frozen_encoder']. Got value: linear_probe" in (
        capsys.readouterr().err
    )
