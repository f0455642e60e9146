"""``medssl export`` end to end on a smoke run pretrained on DICOM series that carry patient tags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medssl.cli import main
from medssl.export import load_pretrained
from medssl.export.formats import check_bundle
from medssl.recipes_dir import recipes_dir

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

PATIENT_NAME, PATIENT_ID = "Doe^Janet7731", "PID-93172"


def write_dicom_series(folder: Path, volume: np.ndarray, series: int) -> None:
    """One file per slice with patient tags (as tests/data/conftest.py writes them)."""
    folder.mkdir(parents=True)
    image = sitk.GetImageFromArray(volume)  # (z, y, x)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = f"1.2.826.0.1.3680043.2.1125.{series + 10}"
    tags = {
        "0008|0060": "MR",
        "0010|0010": PATIENT_NAME,
        "0010|0020": PATIENT_ID,
        "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
        "0020|000e": uid,
        "0020|0037": "1\\0\\0\\0\\1\\0",
    }
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        for tag, value in {**tags, "0020|0032": f"0\\0\\{z}", "0020|0013": str(z + 1)}.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0018", f"{uid}.{z + 1}")
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(piece)


def _files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file()]


def test_export_a_dicom_smoke_run_in_every_format_without_patient_data(tmp_path, capfd):
    rng = np.random.default_rng(0)
    for i in range(8):
        write_dicom_series(
            tmp_path / "scans" / f"s{i}", rng.integers(0, 1000, (8, 20, 20), dtype=np.int16), i
        )
    assert PATIENT_ID.encode() in (tmp_path / "scans" / "s0" / "slice000.dcm").read_bytes()
    run, out = tmp_path / "run", tmp_path / "export"
    recipe = recipes_dir() / "smoke" / "simclr_3d.yaml"
    pretrain = ["pretrain", "--config", str(recipe), "--data.source", str(tmp_path / "scans")]
    assert main([*pretrain, "--trainer.default_root_dir", str(run), "--trainer.max_steps", "1"]) == 0
    formats = "safetensors,torchscript,onnx,bundle"
    assert main(["export", str(run), "--out", str(out), "--format", formats]) == 0

    names = {p.relative_to(out).as_posix() for p in _files(out)}
    assert names == {
        "backbone.safetensors",
        "medssl.json",
        "README.md",
        "model.ts",
        "model.onnx",
        "bundle/configs/metadata.json",
        "bundle/configs/inference.json",
        "bundle/models/model.pt",
    }
    meta = json.loads((out / "medssl.json").read_text())
    fit_end = json.loads((run / "weights" / "medssl.json").read_text())
    assert meta["method"] == "simclr" and meta["data"]["dataset"] == "scans" and meta["global_step"] == 1
    assert meta["recipe_sha256"] == hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    assert meta["data_manifest_sha256"] == fit_end["data_manifest_sha256"] != "unknown"
    assert (
        meta["exports"]["torchscript"]["max_abs_diff"] <= 1e-5
        and meta["exports"]["onnx"]["max_abs_diff"] <= 1e-4
    )
    check_bundle(out / "bundle")

    from_export, _ = load_pretrained(out)
    from_run, _ = load_pretrained(run)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(from_export(x), from_run(x))

    logs = capfd.readouterr()
    secrets = [s.encode() for s in (PATIENT_NAME, PATIENT_ID, PATIENT_NAME.replace("^", " "), "Janet7731")]
    for path in _files(out, run):
        data = path.read_bytes()
        assert not [s for s in secrets if s in data], f"patient data in {path}"
        if path.is_relative_to(out) and path.suffix in (".json", ".md"):
            assert str(tmp_path).encode() not in data, f"absolute path in {path}"
    assert not [s for s in secrets if s in (logs.out + logs.err).encode()]
