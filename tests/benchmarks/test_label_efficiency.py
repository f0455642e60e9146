"""The label-efficiency benchmark refuses what it cannot run before running anything."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import medssl

sys.path.insert(0, str(Path(medssl.__file__).resolve().parents[1] / "benchmarks"))
import label_efficiency  # a script, with its report module beside it


def test_reused_scratch_trials_must_be_in_the_report_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no scratch trial for basicunet finetune 0\.25 seed 7"):
        label_efficiency.run(
            ["--dataset", "drive", "--methods", "jcl", "--fractions", "0.25", "--seeds", "7",
             "--reuse-scratch", "--work", str(tmp_path)]
        )  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_a_method_without_a_calibrated_budget_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = label_efficiency.DATASETS["hippocampus"]
    budgets = {m: s for m, s in shipped.pretrain_steps.items() if m != "mae"}
    monkeypatch.setitem(label_efficiency.DATASETS, "hippocampus", replace(shipped, pretrain_steps=budgets))
    with pytest.raises(SystemExit, match="no pretraining budget for mae on hippocampus"):
        label_efficiency.run(["--dataset", "hippocampus", "--methods", "jcl", "mae", "--work", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # jcl, which has a budget, was not pretrained first
    with pytest.raises(SystemExit, match="unknown method"):
        label_efficiency.run(["--dataset", "drive", "--methods", "byol", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="drive takes --modes finetune frozen_encoder"):
        label_efficiency.run(
            ["--dataset", "drive", "--methods", "jcl", "--modes", "frozen", "--work", str(tmp_path)]
        )


def test_a_pretraining_run_of_another_budget_is_not_reused(tmp_path: Path) -> None:
    stats = tmp_path / "pretrain" / "simclr" / "benchmark.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"steps": 3, "minutes": 0.1}))
    with pytest.raises(SystemExit, match=r"was pretrained with .* not \{'steps': 400\}"):
        label_efficiency.run(["--dataset", "adrenalmnist3d", "--methods", "simclr", "--work", str(tmp_path)])


@pytest.mark.parametrize("name", sorted(label_efficiency.DATASETS))
def test_every_shipped_pretraining_recipe_has_its_fine_tuning_recipe(name: str) -> None:
    """A method with a pretraining recipe (budgeted or not) is fine-tuned by a recipe that exists."""
    dataset = label_efficiency.DATASETS[name]
    recipes = label_efficiency.recipes_dir()
    shipped = {
        method: backbone
        for method, backbone in dataset.backbones.items()
        if (recipes / "pretrain" / f"{method}_{backbone}_{dataset.name}.yaml").is_file()
    }
    assert set(dataset.pretrain_steps) <= set(shipped), "a budget for a method without a recipe"
    for method, backbone in shipped.items():
        assert backbone in dataset.finetune, f"{name}: nothing fine-tunes {method}'s {backbone}"
        assert (recipes / "finetune" / f"{dataset.finetune[backbone]}.yaml").is_file()


def test_the_weights_fingerprint_follows_the_tensors_not_the_checkpoint(tmp_path: Path) -> None:
    from tests.export.conftest import save_checkpoint, tiny_simclr

    module = tiny_simclr("resnet18", 2)
    first = label_efficiency.weights_sha256(save_checkpoint(module, tmp_path / "a.ckpt"))
    module.projection_head.layers[0].weight.data += 1  # a head fine-tuning does not take
    again = label_efficiency.weights_sha256(save_checkpoint(module, tmp_path / "b.ckpt"))
    assert again == first
    next(module.backbone.parameters()).data.view(-1)[0] += 1e-3
    assert label_efficiency.weights_sha256(save_checkpoint(module, tmp_path / "c.ckpt")) != first


def test_a_stopped_pretraining_run_resumes_only_for_its_own_budget(tmp_path: Path) -> None:
    run = tmp_path / "pretrain" / "dino"
    (run / "checkpoints").mkdir(parents=True)
    pneumonia = label_efficiency.DATASETS["pneumoniamnist"]
    budget = label_efficiency.pretraining_budget(pneumonia, "dino", 400)
    assert label_efficiency.stopped_pretraining_step(run, budget) == 0  # nothing to resume: a new run
    torch.save({"global_step": 222}, run / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit, match=r"dino holds a stopped pretraining run for an unknown budget"):
        label_efficiency.stopped_pretraining_step(run, budget)
    (run / "planned.json").write_text(json.dumps(budget))
    assert label_efficiency.stopped_pretraining_step(run, budget) == 222
    with pytest.raises(SystemExit, match=r"stopped pretraining run for \{'steps': 400, .*not \{'steps': 500"):
        label_efficiency.stopped_pretraining_step(run, budget | {"steps": 500})
    other_options = replace(pneumonia, pretrain_args={"dino": ("--data.batch_size", "64")})
    other_budget = label_efficiency.pretraining_budget(other_options, "dino", 400)  # same steps
    with pytest.raises(SystemExit, match=r"not \{'steps': 400, 'args': '--data.batch_size 64'\}"):
        label_efficiency.stopped_pretraining_step(run, other_budget)


def test_a_stopped_pretraining_run_of_another_budget_is_refused_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(label_efficiency, "pretrain", lambda *a: pytest.fail("pretrained before the refusal"))
    run = tmp_path / "pretrain" / "dino"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 222}, run / "checkpoints" / "last.ckpt")
    (run / "planned.json").write_text(json.dumps({"steps": 300}))
    with pytest.raises(SystemExit, match=r"dino holds a stopped pretraining run for \{'steps': 300\}"):
        label_efficiency.run(
            ["--dataset", "hippocampus", "--methods", "jcl", "dino", "--work", str(tmp_path)]
        )
