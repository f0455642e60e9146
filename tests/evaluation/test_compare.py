"""``medssl compare``: the sweep plan, the report's arithmetic, and a tiny sweep through the CLI."""

import json
import math
import signal
from pathlib import Path

import torch

from medssl.cli import main
from medssl.commands import finetune
from medssl.evaluation.compare import default_metric, plan, trial_args
from medssl.evaluation.report import figure, markdown, paired_gain, summarise
from medssl.reliability.preemption import Preempted
from tests.finetune.test_classification import CLS_2D, TINY_ARG, _pretrain_run, write_npz


def test_plan_pairs_every_pretrained_trial_with_a_scratch_trial() -> None:
    trials = plan({"simclr": "runs/a"}, [1.0, 0.1], seeds=[0, 1])
    assert [(t.init, t.label_fraction, t.seed) for t in trials[:4]] == [
        ("scratch", 0.1, 0),
        ("simclr", 0.1, 0),
        ("scratch", 0.1, 1),
        ("simclr", 0.1, 1),
    ]
    args = trial_args(trials[1], "r.yaml", Path("out/x"), ["--trainer.max_epochs", "2"])
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert (
        flags["--model.pretrained"] == "runs/a" and flags["--data.seed"] == flags["--seed_everything"] == "0"
    )
    assert flags["--data.label_fraction"] == "0.1" and flags["--trainer.max_epochs"] == "2"
    assert flags["--model.mode"] == "finetune"
    frozen = plan({"simclr": "runs/a"}, [0.1], seeds=[0], modes=["frozen_encoder", "frozen"])
    assert [trial_args(t, "r.yaml", Path("x"), []).count("--model.mode") for t in frozen] == [1, 1, 0, 0]


def _records() -> list[dict]:
    values = {("scratch", 0): 0.60, ("scratch", 1): 0.70, ("ssl", 0): 0.75, ("ssl", 1): 0.95}
    return [
        {"init": i, "mode": "finetune", "label_fraction": 0.1, "seed": s, "run": f"{i}{s}",
         "train_images": 10, "metrics": {"test/auroc": v}}
        for (i, s), v in values.items()
    ]  # fmt: skip


def test_report_gives_mean_std_and_the_paired_gain() -> None:
    records = _records()
    assert summarise(records, "test/auroc")[("ssl", "finetune")][0.1] == [0.75, 0.95]
    gains = paired_gain(records, "test/auroc", "ssl", "finetune")[0.1]
    assert [round(g, 6) for g in gains] == [0.15, 0.25]
    table = markdown(records, "test/auroc", "t")
    std = math.sqrt(((0.6 - 0.65) ** 2 + (0.7 - 0.65) ** 2) / 1)  # sample std of the scratch seeds
    assert f"| 0.1 | 10 | 0.650 +- {std:.3f} (n=2) | 0.850 +- 0.141 (n=2) | +0.200 +- 0.071 (n=2) |" in table
    assert table.index("scratch") < table.index("ssl - scratch")


def test_segmentation_is_judged_by_dice_even_where_it_logs_a_pixel_auroc_too() -> None:
    binary_segmentation = [{"metrics": {"test/auroc": 0.95, "test/dice": 0.78, "test/hd95": 3.0}}]
    assert default_metric(binary_segmentation) == "test/dice"
    assert default_metric(_records()) == "test/auroc"


def test_plot_has_a_panel_per_mode_and_one_colour_per_init_in_both() -> None:
    records = _records() + [r | {"mode": "frozen", "metrics": {"test/auroc": 0.5}} for r in _records()]
    panels = figure(records, "test/auroc", "t").axes
    assert [p.get_title() for p in panels] == ["fine-tuned", "linear probe on frozen features"]
    legends = [p.get_legend_handles_labels() for p in panels]  # (error-bar containers, init names)
    curves = [dict(zip(labels, handles, strict=True)) for handles, labels in legends]
    colours = [{init: bars.lines[0].get_color() for init, bars in c.items()} for c in curves]
    assert colours[0] == colours[1] and colours[0]["scratch"] == "black" and colours[0]["ssl"] != "black"
    assert [bars.lines[0].get_linestyle() for bars in curves[0].values()] == ["--", "-"]  # scratch dashed


def test_plot_draws_each_reference_level_across_every_panel() -> None:
    records = _records() + [r | {"mode": "frozen"} for r in _records()]
    panels = figure(records, "test/auroc", "t", references={"second annotator": 0.8}).axes
    for axes in panels:
        lines = [line for line in axes.get_lines() if line.get_label() == "second annotator"]
        assert len(lines) == 1 and list(lines[0].get_ydata()) == [0.8, 0.8]


def _compare_args(tmp_path: Path, *extra: str) -> list[str]:
    source = write_npz(tmp_path / "tiny.npz", 2)
    return [
        "compare",
        "--config",
        str(CLS_2D),
        "--label-fractions", "0.5", "1.0",
        "--seeds", "1",
        "--out", str(tmp_path / "compare"),
        "--data.source", str(source),
        "--model.backbone", "resnet10",
        "--model.backbone_kwargs", TINY_ARG,
        "--data.batch_size", "8",
        "--data.num_workers", "0",
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


def test_cli_sweeps_writes_the_report_and_reuses_finished_trials(tmp_path: Path, capsys) -> None:
    pretrain = _pretrain_run(tmp_path)
    args = _compare_args(tmp_path, "--pretrained", f"simclr={pretrain}")
    assert main(args) == 0
    out = tmp_path / "compare"
    results = json.loads((out / "compare.json").read_text())
    assert results["metric"] == "test/auroc" and len(results["trials"]) == 4  # 2 inits x 2 fractions
    by_run = {t["run"]: t for t in results["trials"]}
    assert by_run["simclr/finetune/fraction0.5_seed1"]["train_images"] == 12  # half of the 24 patients
    assert by_run["scratch/finetune/fraction1_seed1"]["train_images"] == 24
    splits = [json.loads((out / r / "splits.json").read_text())["train"] for r in by_run]
    assert splits[0] == splits[1]  # scratch and pretrained trials of a (fraction, seed) see the same cases
    assert (out / "compare.png").stat().st_size > 10_000
    assert (
        "| 0.5 | 12 |" in (out / "compare.md").read_text() and "simclr - scratch" in capsys.readouterr().out
    )

    stamp = (out / "scratch/finetune/fraction0.5_seed1/test_metrics.json").stat().st_mtime_ns
    assert main(args) == 0  # finished trials are reused, not run again
    assert (out / "scratch/finetune/fraction0.5_seed1/test_metrics.json").stat().st_mtime_ns == stamp


def test_cli_refuses_what_it_cannot_compare(tmp_path: Path, capsys) -> None:
    assert main(_compare_args(tmp_path, "--pretrained", str(tmp_path / "nowhere"))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(_compare_args(tmp_path, "--data.label_fraction", "0.1")) == 2
    assert "sets --data.label_fraction itself" in capsys.readouterr().err
    assert main(_compare_args(tmp_path, "--modes", "finetune", "frozen_encoder")) == 2
    assert "classification recipes take --modes finetune linear_probe frozen, not frozen_encoder" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "compare").exists()


def test_cli_frozen_mode_reports_the_linear_probe_and_knn_of_medssl_evaluate(tmp_path: Path) -> None:
    pretrain = _pretrain_run(tmp_path)
    args = _compare_args(tmp_path, "--pretrained", f"simclr={pretrain}", "--modes", "frozen")
    args[args.index("--label-fractions") + 1 : args.index("--seeds")] = ["0.5"]
    assert main(args) == 0
    trials = json.loads((tmp_path / "compare" / "compare.json").read_text())["trials"]
    assert [(t["init"], t["mode"], t["train_images"]) for t in trials] == [
        ("scratch", "frozen", 12),
        ("simclr", "frozen", 12),
    ]
    assert {"test/auroc", "test/knn_auroc", "test/f1"} <= set(trials[1]["metrics"])
    frozen = json.loads((tmp_path / "compare" / trials[1]["run"] / "frozen_metrics.json").read_text())
    assert trials[1]["metrics"]["test/auroc"] == frozen["metrics"]["linear/test/auroc"]


def test_cli_resumes_a_trial_that_stopped_part_way_rather_than_start_it_again(tmp_path: Path, capsys) -> None:
    args = _compare_args(tmp_path, "--label-fractions", "1.0")
    assert main(args) == 0
    run_dir = tmp_path / "compare" / "scratch/finetune/fraction1_seed1"
    one_epoch = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    (run_dir / "test_metrics.json").unlink()  # as if stopped by SIGTERM after its last checkpoint
    (run_dir / "earlier.txt").write_text("kept")
    assert main([*args, "--trainer.max_epochs", "2"]) == 0
    assert "scratch/finetune/fraction1_seed1: resuming from" in capsys.readouterr().out
    assert (run_dir / "earlier.txt").is_file() and (run_dir / "test_metrics.json").is_file()
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2 * one_epoch


def test_a_sweep_stopped_by_a_signal_says_to_run_the_sweep_again(tmp_path: Path, capsys, monkeypatch) -> None:
    def stopped(args: list[str], verbose: bool) -> None:
        raise Preempted(signal.SIGTERM, "last.ckpt", 3)

    monkeypatch.setattr(finetune, "run", stopped)
    assert main(_compare_args(tmp_path)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM at step 3" in err and "run the same medssl compare again" in err
    assert "--ckpt_path" not in err
