"""Classification fine-tuning: module + data on tiny MedMNIST-like files, through the module and the CLI."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from medssl.cli import main
from medssl.data.splits import check_patient_leakage
from medssl.finetune.classification import ClassificationModule, balanced_weights, classification_metrics
from medssl.finetune.cls_data import ClassificationDataModule
from medssl.recipes_dir import recipes_dir

TINY = {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125, "small_input": True}}
TINY_ARG = "{widen_factor: 0.125, small_input: true}"
CLS_2D = recipes_dir() / "finetune" / "cls_resnet18_pneumoniamnist_2d.yaml"


def write_npz(path: Path, spatial_dims: int, num_labels: int = 1, size: int = 16) -> Path:
    """MedMNIST layout; class 1 (label 0 of multi-label) images hold a bright centre square."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        labels = rng.integers(0, 2, (n, num_labels))
        labels[:2, 0] = [0, 1]  # both classes in every split
        images = rng.integers(0, 60, (n, *[size] * spatial_dims))
        centre = (slice(None), *[slice(size // 4, 3 * size // 4)] * spatial_dims)
        images[centre] += 150 * labels[:, :1].reshape(n, *[1] * spatial_dims)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = (
            images.astype(np.uint8),
            labels.astype(np.uint8),
        )
    np.savez(path, **arrays)
    return path


def _data(source: Path, spatial_dims: int = 2, **kwargs) -> ClassificationDataModule:
    options = dict(batch_size=8, num_workers=0, cache="none", seed=0) | kwargs
    return ClassificationDataModule(source=str(source), spatial_dims=spatial_dims, **options)


def _module(spatial_dims: int = 2, **kwargs) -> ClassificationModule:
    return ClassificationModule(**TINY, spatial_dims=spatial_dims, lr=1e-2, **kwargs)


def _fit_test(module: ClassificationModule, data: ClassificationDataModule, root: Path) -> dict[str, float]:
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=data)
    return trainer.test(module, datamodule=data, verbose=False)[0]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fit_and_test_on_the_test_split(tmp_path: Path, spatial_dims: int) -> None:
    data = _data(write_npz(tmp_path / "tiny.npz", spatial_dims), spatial_dims)
    metrics = _fit_test(_module(spatial_dims), data, tmp_path)
    for key in ("auroc", "accuracy", "balanced_accuracy", "f1", "auroc_class0", "auroc_class1", "loss"):
        assert 0.0 <= metrics[f"test/{key}"] < float("inf")
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert len(splits["test"]) == 8 and all(case.startswith("test-") for case in splits["test"])


def test_linear_probe_leaves_the_backbone_unchanged(tmp_path: Path) -> None:
    module = _module(mode="linear_probe")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    _fit_test(module, _data(write_npz(tmp_path / "tiny.npz", 2)), tmp_path)
    after = module.state_dict()
    assert all(
        torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.")
    )  # incl. BN stats
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert [len(g["params"]) for g in module.param_groups()] == [1, 1]  # head weight and bias only


def test_a_scratch_backbone_trains_at_the_full_lr() -> None:
    """``backbone_lr_scale`` protects pretrained weights; a scratch baseline at a tenth of the rate would lose
    for the wrong reason."""
    module = _module(mode="finetune", backbone_lr_scale=0.1)
    assert {group["lr"] for group in module.param_groups()} == {1e-2}
    vit = ClassificationModule(
        backbone="vit_tiny",
        backbone_kwargs={"img_size": 16, "patch_size": 8, "num_layers": 2},
        lr=1e-2,
        layer_decay=0.5,
    )
    assert {group["lr"] for group in vit.param_groups()} == {1e-2}


def test_multi_label_path(tmp_path: Path) -> None:
    data = _data(write_npz(tmp_path / "ml.npz", 2, num_labels=3), num_classes=3, multi_label=True)
    module = _module(num_classes=3, multi_label=True, class_weights="balanced")
    metrics = _fit_test(module, data, tmp_path)
    assert {"test/auroc", "test/auroc_class2", "test/f1"} <= set(metrics)
    assert module.class_weight is not None and module.class_weight.shape == (3,)


def test_class_weights_in_the_loss() -> None:
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 1])
    module = _module(class_weights=[1.0, 3.0])
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    weighted = (expected * torch.tensor([1.0, 3.0, 3.0])).sum() / 7.0  # PyTorch: sum(w_i l_i) / sum(w_i)
    assert torch.isclose(module.loss(logits, target), weighted)
    assert torch.allclose(balanced_weights([30, 10], 40, multi_label=False), torch.tensor([40 / 60, 40 / 20]))
    assert torch.allclose(balanced_weights([10, 30], 40, multi_label=True), torch.tensor([3.0, 1 / 3]))
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        _module(class_weights=[1.0, 2.0, 3.0])


def test_metrics_on_a_known_prediction() -> None:
    """Scores 0.1, 0.4, 0.35, 0.8 for labels 0, 0, 1, 1: AUROC 3/4 (one of four pairs mis-ordered)."""
    p1 = torch.tensor([0.1, 0.4, 0.35, 0.8])
    metrics = classification_metrics(2, multi_label=False)
    metrics.update(torch.stack([1 - p1, p1], dim=1), torch.tensor([0, 0, 1, 1]))
    values = metrics.compute()
    assert values["auroc"].item() == pytest.approx(0.75)
    assert values["accuracy"].item() == pytest.approx(0.75)  # argmax: 0, 0, 0, 1
    assert values["balanced_accuracy"].item() == pytest.approx((1.0 + 0.5) / 2)
    assert values["f1"].item() == pytest.approx((0.8 + 2 / 3) / 2)  # F1 of class 0: 0.8, class 1: 2/3
    assert values["auroc_class"].tolist() == pytest.approx([0.75, 0.75])


def test_no_patient_in_two_splits_and_whole_patients_in_the_fraction(tmp_path: Path) -> None:
    rows = []
    for p in range(20):
        for s in range(3):
            name = tmp_path / f"p{p}_{s}.png"
            Image.fromarray((np.arange(64).reshape(8, 8) + 10 * p).astype(np.uint8)).save(name)
            rows.append({"image": name.name, "label": p % 2, "patient_id": f"p{p}"})
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    data = _data(tmp_path / "list.csv", val_fraction=0.2, test_fraction=0.2, label_fraction=0.5)
    splits = data.items()
    tagged = [{**item, "split": name} for name, items in splits.items() for item in items]
    assert check_patient_leakage(tagged) == []
    assert len(splits["test"]) == 12 and len(splits["val"]) == 9  # 4 and 3 whole patients
    assert len(splits["train"]) % 3 == 0 and data.class_counts()[0] > 0 and data.class_counts()[1] > 0
    weights = torch.tensor(data.balanced_weights())
    labels = torch.tensor([i["label"] for i in splits["train"]])
    assert torch.isclose(weights[labels == 0].sum(), weights[labels == 1].sum())


def test_bad_labels_are_reported(tmp_path: Path) -> None:
    from medssl.data.validation import DatalistError

    with pytest.raises(DatalistError, match=r"set multi_label true\?"):
        _data(write_npz(tmp_path / "ml.npz", 2, num_labels=3)).items()


def _finetune_args(source: Path, run: Path, *extra: str) -> list[str]:
    return [
        "finetune",
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
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


def _pretrain_run(tmp_path: Path) -> Path:
    folder = tmp_path / "png"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "pretrain"
    smoke = str(recipes_dir() / "smoke" / "simclr_2d.yaml")
    args = [
        "pretrain",
        "--config",
        smoke,
        "--data.source",
        str(folder),
        "--trainer.default_root_dir",
        str(run),
    ]
    assert main([*args, "--trainer.max_epochs", "1"]) == 0
    return run


def test_cli_loads_a_pretraining_run_and_writes_test_metrics(tmp_path: Path, capsys) -> None:
    pretrain = _pretrain_run(tmp_path)
    source, run = write_npz(tmp_path / "tiny.npz", 2), tmp_path / "finetune"
    extra = ("--model.pretrained", str(pretrain), "--data.label_fraction", "0.5")
    assert main(_finetune_args(source, run, *extra)) == 0
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["pretrained"] == "<redacted>/pretrain"  # the run's name, not a path outside this run
    assert "best-" in report["checkpoint"] and 0.0 <= report["metrics"]["test/auroc"] <= 1.0
    assert "test/auroc:" in capsys.readouterr().out
    assert len(json.loads((run / "splits.json").read_text())["train"]) == 12  # half of 24 patients

    bad = _finetune_args(source, tmp_path / "bad", "--model.pretrained", str(pretrain))
    bad[bad.index(TINY_ARG)] = "{widen_factor: 0.25, small_input: true}"
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "medssl finetune: error:" in err and "widen_factor pretrained 0.125 vs here 0.25" in err
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_cli_scratch_and_missing_weights(tmp_path: Path, capsys) -> None:
    source = write_npz(tmp_path / "tiny.npz", 2)
    missing = _finetune_args(source, tmp_path / "run", "--model.pretrained", str(tmp_path / "nowhere"))
    assert main(missing) == 2
    assert "expected an export folder" in capsys.readouterr().err
    assert main(_finetune_args(source, tmp_path / "run", "--model.pretrained", "none")) == 0
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["pretrained"] == "none"
