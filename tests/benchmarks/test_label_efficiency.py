"""The label-efficiency report accumulates the pieces it is run in, and never mixes budgets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import medssl

SCRIPT = Path(medssl.__file__).resolve().parents[1] / "benchmarks" / "label_efficiency.py"
spec = importlib.util.spec_from_file_location("label_efficiency", SCRIPT)
assert spec is not None and spec.loader is not None
label_efficiency = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = label_efficiency  # its dataclasses look their module up
spec.loader.exec_module(label_efficiency)


def trial(init: str, mode: str, fraction: float, seed: int, auroc: float) -> dict:
    return {
        "backbone": "resnet18", "init": init, "mode": mode, "label_fraction": fraction, "seed": seed,
        "metrics": {"test/auroc": auroc},
    }  # fmt: skip


def payload(trials: list[dict], steps: int = 100, pretraining: int = 500) -> dict:
    return {
        "dataset": "pneumoniamnist_2d",
        "finetune_steps": steps,
        "cpu_backbones": {},
        "pretraining": {"simclr": {"steps": pretraining, "minutes": 1.0}},
        "trials": trials,
    }


def test_pieces_accumulate_and_a_rerun_replaces_its_own_trials(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    frozen = [trial("scratch", "frozen", 0.1, 0, 0.8), trial("simclr", "frozen", 0.1, 0, 0.9)]
    path.write_text(json.dumps(payload(frozen)))
    finetune = [trial("simclr", "finetune", 1.0, 0, 0.95), trial("simclr", "frozen", 0.1, 0, 0.91)]
    merged = label_efficiency.merge_earlier_pieces(payload(finetune), path)
    got = {(t["init"], t["mode"], t["label_fraction"]): t["metrics"]["test/auroc"] for t in merged["trials"]}
    assert got == {
        ("scratch", "frozen", 0.1): 0.8,
        ("simclr", "frozen", 0.1): 0.91,
        ("simclr", "finetune", 1.0): 0.95,
    }


def test_results_of_other_budgets_are_replaced_not_mixed(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload([trial("scratch", "frozen", 0.1, 0, 0.8)], pretraining=200)))
    new = payload([trial("simclr", "finetune", 1.0, 0, 0.95)])
    assert label_efficiency.merge_earlier_pieces(new, path)["trials"] == new["trials"]
    path.write_text(json.dumps(payload([trial("scratch", "frozen", 0.1, 0, 0.8)], steps=50)))
    assert label_efficiency.merge_earlier_pieces(new, path)["trials"] == new["trials"]


def test_a_method_without_a_calibrated_budget_is_refused_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no pretraining budget for mae on adrenalmnist3d"):
        label_efficiency.run(
            ["--dataset", "adrenalmnist3d", "--methods", "simclr", "mae", "--work", str(tmp_path)]
        )
    assert not any(tmp_path.iterdir())  # simclr, which has a budget, was not pretrained first
    with pytest.raises(SystemExit, match="unknown method"):
        label_efficiency.run(["--dataset", "drive", "--methods", "byol", "--work", str(tmp_path)])
