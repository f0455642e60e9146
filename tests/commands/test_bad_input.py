import shutil

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import main

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


@pytest.mark.parametrize(
    "make_source, expected",
    [
        (lambda root: root / "missing.csv", "missing.csv"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "empty"),
        (
            lambda root: (root / "list.csv").write_text("path,label\na.nii.gz,1\n") and root / "list.csv",
            "image",
        ),
    ],
    ids=["missing-file", "empty-folder", "csv-without-image-column"],
)
def test_unusable_sources_are_reported(tmp_path, capsys, make_source, expected):
    source = make_source(tmp_path)
    assert main(smoke_args(3, source, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_channel_mismatch_is_reported(tmp_path, capsys, png_folder):
    assert main(smoke_args(2, png_folder, tmp_path / "run", "--data.in_channels", "3")) == 2
    assert "channels" in capsys.readouterr().err
    shutil.rmtree(png_folder)
