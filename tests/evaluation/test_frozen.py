"""Frozen-feature evaluation: kNN scores, the linear probe, and ``medssl evaluate`` through the CLI."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from medssl.cli import main
from medssl.evaluation.frozen import frozen_metrics
from medssl.evaluation.knn import knn_scores
from medssl.evaluation.linear_probe import fit_linear_probe, probe_auroc
from tests.finetune.test_classification import CLS_2D, TINY_ARG, _pretrain_run, write_npz

SMOKE = str(CLS_2D.parents[1] / "smoke" / "simclr_2d.yaml")


def test_knn_scores_match_a_hand_computed_vote() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # normalised: e1, e2, (e1+e2)/sqrt2
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])  # cosine to the bank: 1, 0, 1/sqrt2
    scores = knn_scores(query, bank, labels, num_classes=2, k=2, temperature=0.5)
    w_first, w_third = math.exp(1 / 0.5), math.exp((1 / math.sqrt(2)) / 0.5)  # the 2 nearest: rows 0 and 2
    expected = torch.tensor([[w_first, w_third]]) / (w_first + w_third)
    assert torch.allclose(scores, expected, atol=1e-6)


def test_knn_scores_multi_label_are_the_weighted_share_of_each_label() -> None:
    bank = torch.eye(3)
    labels = torch.tensor([[1, 0], [1, 1], [0, 0]])
    scores = knn_scores(torch.tensor([[1.0, 1.0, 0.0]]), bank, labels, num_classes=2, k=2)
    assert torch.allclose(scores, torch.tensor([[1.0, 0.5]]))  # both neighbours have label 0, one has 1


def _blobs(n: int, informative: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 16, generator=generator)
    if informative:
        x[:, :3] += 4 * torch.nn.functional.one_hot(y, 3)
    return x, y


@pytest.mark.parametrize("informative", [True, False])
def test_linear_probe_separates_informative_features_only(informative: bool) -> None:
    train, val, test = (_blobs(90, informative, seed) for seed in (0, 1, 2))
    probe = fit_linear_probe(train, val, num_classes=3)
    auroc = probe_auroc(probe(test[0]), test[1], 3, multi_label=False)
    assert auroc > 0.98 if informative else 0.3 < auroc < 0.7
    assert probe(test[0]).sum(1).allclose(torch.ones(90))


def test_frozen_metrics_report_both_probes_on_val_and_test() -> None:
    features = dict(zip(("train", "val", "test"), (_blobs(60, True, s) for s in range(3)), strict=True))
    metrics = frozen_metrics(features, num_classes=3, knn_k=5)
    assert metrics["knn/test/auroc"] > 0.95 and metrics["linear/test/auroc"] > 0.95
    assert {"knn/val/f1", "linear/test/balanced_accuracy", "linear/test/auroc_class2", "linear/l2"} <= set(
        metrics
    )


def _evaluate_args(source: Path, run: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--config",
        str(CLS_2D),
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
        "--model.backbone",
        "resnet10",
        "--model.backbone_kwargs",
        TINY_ARG,
        "--data.num_workers",
        "0",
        *extra,
    ]


def test_cli_evaluates_a_pretraining_run_on_frozen_features(tmp_path: Path, capsys) -> None:
    pretrain = _pretrain_run(tmp_path)
    source, run = write_npz(tmp_path / "tiny.npz", 2), tmp_path / "evaluate"
    assert main(_evaluate_args(source, run, "--model.pretrained", str(pretrain), "--knn_k", "5")) == 0
    report = json.loads((run / "frozen_metrics.json").read_text())
    assert report["pretrained"] == str(pretrain / "weights")
    assert report["images"] == {"train": 24, "val": 8, "test": 8}  # the npz's own splits
    assert 0.0 <= report["metrics"]["linear/test/auroc"] <= 1.0 and report["metrics"]["knn/k"] == 5
    assert (run / "config.yaml").is_file()
    assert "knn/test/auroc:" in capsys.readouterr().out


def test_cli_refuses_segmentation_recipes_and_mismatched_weights(tmp_path: Path, capsys) -> None:
    seg = str(CLS_2D.parent / "seg_resnet18_drive_2d.yaml")
    assert main(["evaluate", "--config", seg]) == 2
    assert "needs a classification recipe" in capsys.readouterr().err
    source = write_npz(tmp_path / "tiny.npz", 2)
    args = _evaluate_args(source, tmp_path / "run", "--model.pretrained", str(tmp_path / "nowhere"))
    assert main(args) == 2
    assert "expected an export folder" in capsys.readouterr().err


def test_online_knn_probe_logs_during_pretraining(tmp_path: Path) -> None:
    source, run = write_npz(tmp_path / "tiny.npz", 2), tmp_path / "pretrain"
    smoke = str(CLS_2D.parents[1] / "smoke" / "simclr_2d.yaml")
    args = [
        "pretrain",
        "--config",
        smoke,
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
    ]
    probe = ["--probe.source", str(source), "--probe.k", "3", "--data.intensity", "minmax"]
    assert main([*args, *probe, "--trainer.max_epochs", "2"]) == 0
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/knn_auroc")]
    assert len(rows) == 2 and all(0.0 <= float(r["val/knn_auroc"]) <= 1.0 for r in rows)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["probe"]["source"] == "<redacted>/tiny"  # outside the run folder (--record_paths keeps it)


def test_the_probe_is_off_without_a_source(tmp_path: Path) -> None:
    run = tmp_path / "pretrain"
    source = write_npz(tmp_path / "tiny.npz", 2)
    smoke = str(CLS_2D.parents[1] / "smoke" / "simclr_2d.yaml")
    args = [
        "pretrain",
        "--config",
        smoke,
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
    ]
    assert main([*args, "--trainer.max_epochs", "1"]) == 0
    assert "val/knn_auroc" not in (run / "metrics.csv").read_text()
