"""Bad input gives one readable report (one line per bad file, exit code 2), no traceback, nothing written."""

import builtins
import errno
import logging
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import main

from .bad_corpus import KINDS, SOURCE_LEVEL
from .conftest import smoke_args, write_nifti_folder


def _broken_3d_folder(root):
    folder = write_nifti_folder(root / "vols", count=6)
    data = (folder / "vol_00.nii.gz").read_bytes()
    (folder / "vol_01.nii.gz").write_bytes(data[: len(data) // 2])  # truncated download
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)), folder / "slice_2d.nii.gz")
    (folder / "notes.nii.gz").write_text("not an image")
    return folder


def test_broken_folder_gives_one_report_and_no_training(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(smoke_args(3, _broken_3d_folder(tmp_path), run)) == 2
    err = capsys.readouterr().err
    assert "vol_01.nii.gz" in err and "truncated" in err
    assert "slice_2d.nii.gz" in err and "2D" in err
    assert "notes.nii.gz" in err
    assert "vol_00.nii.gz" not in err
    assert "Traceback" not in err
    assert not run.exists()


def test_skip_bad_drops_the_bad_entries_and_trains(tmp_path, caplog):
    run = tmp_path / "run"
    assert (
        main(
            smoke_args(
                3, _broken_3d_folder(tmp_path), run, "--data.skip_bad", "true", "--trainer.max_epochs", "1"
            )
        )
        == 0
    )
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "vol_01.nii.gz" in caplog.text


def test_channel_mismatch_is_reported(tmp_path, capsys, png_folder):
    assert main(smoke_args(2, png_folder, tmp_path / "run", "--data.in_channels", "3")) == 2
    assert "channels" in capsys.readouterr().err
    shutil.rmtree(png_folder)


def _deny_reading(monkeypatch, path: str) -> None:
    """Opening ``path`` fails with EACCES, as for a non-root user on a mode-000 file (the suite may run as
    root, which reads any file whatever its mode)."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and os.fspath(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def test_the_corpus_has_at_least_15_kinds():
    assert len(KINDS) >= 15


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bad_input_corpus_gives_a_one_line_report_and_writes_nothing(kind, tmp_path, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    case = KINDS[kind](tmp_path / "data")
    if case.root_only_mock:
        _deny_reading(monkeypatch, case.root_only_mock)
    run = tmp_path / "run"
    assert main([*case.args, "--trainer.default_root_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"medssl {case.args[0]}: error:")
    lines = [line for line in err.splitlines() if line.startswith("- ")]
    assert len(lines) == 1, err  # the bad entry only; the good ones are not named
    assert lines[0].startswith(f"- {case.where}"), err
    assert case.reason in lines[0], err
    assert not run.exists()


@pytest.mark.parametrize("kind", sorted(set(KINDS) - SOURCE_LEVEL))
def test_skip_bad_drops_the_entry_and_reports_it(kind, tmp_path, caplog, monkeypatch):
    from medssl.commands import finetune, pretrain

    (tmp_path / "data").mkdir()
    case = KINDS[kind](tmp_path / "data")
    if case.root_only_mock:
        _deny_reading(monkeypatch, case.root_only_mock)
    command = pretrain if case.args[0] == "pretrain" else finetune
    args = [*case.args[1:], "--data.skip_bad", "true", "--trainer.default_root_dir", str(tmp_path / "run")]
    with caplog.at_level(logging.WARNING, logger="medssl.data"):
        items = command.build_cli(args).datamodule.items()
    assert items, "the good entries are kept"
    report = caplog.text
    assert f"- {case.where}" in report and case.reason in report and "(skip_bad)" in report
