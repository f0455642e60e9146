"""Nothing a run writes holds a DICOM patient field or a path outside the run folder, unless asked."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from medssl.cli import main
from medssl.reliability.privacy import redact, redact_path

from ..commands.conftest import smoke_args, write_nifti_folder
from ..data.conftest import write_dicom_series

PATIENT_FIELDS = (b"Test^Patient", b"P001")  # PatientName, PatientID written into every slice


def test_paths_outside_the_run_are_redacted_to_a_name(tmp_path):
    run = tmp_path / "run"
    assert redact_path("/pacs/DOE_JOHN/msd_hippocampus/imagesTr", run) == "<redacted>/msd_hippocampus"
    assert redact_path(str(tmp_path / "simclr" / "checkpoints" / "last.ckpt"), run) == "<redacted>/simclr"
    assert redact_path(str(run / "checkpoints"), run) == str(run / "checkpoints")  # the run's own folder
    assert redact_path("${MEDSSL_DATA_DIR}/pneumoniamnist.npz", run).startswith("${MEDSSL_DATA_DIR}")
    assert redact_path("val/auroc", run) == "val/auroc"  # a metric name, not a path
    nested = {"data": {"source": "/pacs/x/ct"}, "callbacks": [{"dirpath": "~/elsewhere/ckpt"}], "lr": 0.1}
    assert redact(nested, run) == {
        "data": {"source": "<redacted>/ct"},
        "callbacks": [{"dirpath": "<redacted>/ckpt"}],
        "lr": 0.1,
    }


def _hospital(tmp_path: Path) -> Path:
    """A study folder with a sub-folder per patient (named after them), one scan a DICOM series with the
    patient's name and ID in every slice."""
    root = tmp_path / "pacs" / "study_ct"
    write_nifti_folder(root / "DOE_JOHN_0412", count=5)
    volume = (np.random.default_rng(0).random((20, 20, 20)) * 1000).astype(np.int16)
    write_dicom_series(root / "DOE_JANE_0413" / "series_ct", volume)
    return root


@pytest.mark.slow
def test_a_run_writes_no_patient_field_and_no_outside_path(tmp_path):
    source = _hospital(tmp_path)
    run = tmp_path / "run"
    assert main(smoke_args(3, source, run, "--trainer.max_epochs", "1")) == 0
    written = [p for p in run.rglob("*") if p.is_file()]
    names = {p.relative_to(run).as_posix() for p in written}
    assert {
        "config.yaml",
        "hparams.yaml",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "weights/medssl.json",
    } <= names
    for path in written:  # text and binary (checkpoints store their pickles uncompressed)
        data = path.read_bytes()
        for secret in (b"DOE_J", str(source).encode(), str(tmp_path / "pacs").encode(), *PATIENT_FIELDS):
            assert secret not in data, f"{secret!r} in {path.relative_to(run)}"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["source"] == "<redacted>/study_ct"

    kept = tmp_path / "kept"
    args = smoke_args(3, source, kept, "--trainer.max_epochs", "1", "--record_paths", "true")
    assert main([*args, "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]) == 0
    assert yaml.safe_load((kept / "config.yaml").read_text())["data"]["source"] == str(source)
