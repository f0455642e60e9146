"""The label-efficiency report accumulates the pieces it is run in, and never mixes budgets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import medssl

sys.path.insert(0, str(Path(medssl.__file__).resolve().parents[1] / "benchmarks"))
import label_efficiency_report as results  # beside the script it serves


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
    merged = results.merge_earlier_pieces(payload(finetune), path)
    got = {(t["init"], t["mode"], t["label_fraction"]): t["metrics"]["test/auroc"] for t in merged["trials"]}
    assert got == {
        ("scratch", "frozen", 0.1): 0.8,
        ("simclr", "frozen", 0.1): 0.91,
        ("simclr", "finetune", 1.0): 0.95,
    }


def test_another_finetuning_budget_replaces_everything(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload([trial("scratch", "frozen", 0.1, 0, 0.8)], steps=50)))
    new = payload([trial("simclr", "finetune", 1.0, 0, 0.95)])
    assert results.merge_earlier_pieces(new, path)["trials"] == new["trials"]


def test_other_finetuning_options_replace_everything_other_worker_counts_do_not(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload([trial("scratch", "frozen", 0.1, 0, 0.8)]) | {"finetune_args": ""}))
    new = payload([trial("simclr", "finetune", 1.0, 0, 0.95)])
    faster = results.merge_earlier_pieces(new | {"finetune_args": "--data.num_workers=0"}, path)
    assert len(faster["trials"]) == 2  # the same maths, on another number of loader processes
    other = results.merge_earlier_pieces(new | {"finetune_args": "--model.lr 0.01"}, path)
    assert other["trials"] == new["trials"]


def test_new_cpu_options_for_one_backbone_family_replace_only_its_trials(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    vit = trial("scratch", "frozen", 0.1, 0, 0.7) | {"backbone": "vit_tiny"}
    path.write_text(json.dumps(payload([trial("scratch", "frozen", 0.1, 0, 0.8), vit])))
    new = payload([trial("mae", "finetune", 1.0, 0, 0.9) | {"backbone": "vit_tiny"}])
    new["cpu_backbones"] = {"vit_tiny": "{patch_size: 7}"}
    merged = results.merge_earlier_pieces(new, path)
    kept = [(t["backbone"], t["init"]) for t in merged["trials"]]
    assert kept == [("resnet18", "scratch"), ("vit_tiny", "mae")]


def test_a_method_pretrained_again_replaces_its_own_trials_and_keeps_scratch(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    earlier = [trial("scratch", "frozen", 0.1, 0, 0.8), trial("simclr", "frozen", 0.01, 0, 0.7)]
    path.write_text(json.dumps(payload(earlier, pretraining=200)))
    new = payload([trial("simclr", "finetune", 1.0, 0, 0.95)])  # another simclr run: its 1 % trial is gone
    merged = results.merge_earlier_pieces(new, path)
    assert [(t["init"], t["label_fraction"]) for t in merged["trials"]] == [("simclr", 1.0), ("scratch", 0.1)]
    assert merged["pretraining"]["simclr"]["steps"] == 500


def test_second_reader_dice_is_scored_inside_the_field_of_view_per_image(tmp_path: Path) -> None:
    from PIL import Image

    first, second, fov = (np.zeros((2, 8, 8), np.uint8) for _ in range(3))
    first[:, :4], fov[:, :, :6] = 255, 255  # image 0: the same vessels, image 1: half of them
    second[0], second[1, :2] = first[0], 255
    second[:, :, 6:] = 255  # outside the field of view: ignored
    for name, masks in {"first": first, "second": second, "fov": fov}.items():
        (tmp_path / name).mkdir()
        for case in (0, 1):
            Image.fromarray(masks[case]).save(tmp_path / name / f"{case + 1:02d}_{name}.gif")
    reading = results.SecondReading("first", "second", "fov")
    got = results.second_reader_dice(reading, tmp_path)
    half = 2 * 12 / (24 + 12)  # image 1: 12 of the first reader's 24 pixels inside the FOV
    assert got["images"] == 2 and got["dice"] == round((1 + half) / 2, 4)
    assert "Dice 0.833 +- 0.236 over 2 images" in results.second_reader_line(got)


def test_a_dataset_copy_without_second_annotation_gets_no_human_reference(tmp_path: Path) -> None:
    reading = results.SecondReading("first", "second")
    assert results.second_reader_dice(reading, tmp_path) is None


def test_a_method_pretrained_again_to_the_same_weights_keeps_its_trials(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    first = {"steps": 500, "minutes": 14.1, "weights_sha256": "ab12"}
    earlier = [trial("scratch", "finetune", 1.0, 0, 0.8), trial("simclr", "finetune", 0.01, 0, 0.7)]
    path.write_text(json.dumps(payload(earlier) | {"pretraining": {"simclr": first}}))
    new = payload([trial("simclr", "finetune", 1.0, 0, 0.95)])

    def merged_with(stats: dict) -> dict:
        return results.merge_earlier_pieces(new | {"pretraining": {"simclr": stats}}, path)

    def kept(merged: dict) -> list[tuple]:
        return [(t["init"], t["label_fraction"]) for t in merged["trials"]]

    slower = {"minutes": 43.0, "cpu": "AVX2", "threads": 1}  # the conditions are recorded, not asked for
    same = merged_with(first | slower)  # the same weights on a slower machine
    assert kept(same) == [("simclr", 0.01), ("scratch", 1.0), ("simclr", 1.0)]
    assert same["pretraining"]["simclr"] == first  # the run the kept trials came from
    other = merged_with(first | {"weights_sha256": "cd34"})
    assert kept(other) == [("scratch", 1.0), ("simclr", 1.0)]
    path.write_text(json.dumps(payload(earlier)))  # a report from before weights_sha256: never the same
    assert kept(merged_with(first)) == [("scratch", 1.0), ("simclr", 1.0)]


def test_a_second_backbone_family_splits_the_plot_and_removes_the_single_one(tmp_path: Path) -> None:
    out = tmp_path / "label_efficiency_drive"
    one = results.plot_paths(out, ["basicunet"])
    assert one == {"basicunet": tmp_path / "label_efficiency_drive.png"}
    for png in [*one.values(), tmp_path / "label_efficiency_pneumoniamnist.png"]:
        png.write_bytes(b"png")
    two = results.plot_paths(out, ["basicunet", "vit_tiny"])
    for png in two.values():
        png.write_bytes(b"png")
    results.remove_stale_plots(out, two.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "label_efficiency_drive_basicunet.png",
        "label_efficiency_drive_vit_tiny.png",
        "label_efficiency_pneumoniamnist.png",  # another dataset's
    ]
    results.remove_stale_plots(out, one.values())  # back to one family: the split plots go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label_efficiency_pneumoniamnist.png"]
