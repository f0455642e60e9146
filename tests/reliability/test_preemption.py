"""SIGTERM to a running `medssl pretrain` (its whole process group, workers included, as a scheduler does):
it finishes the step, writes last.ckpt, says so and exits 143; `--ckpt_path auto` then completes the run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import medssl

from ..commands.conftest import smoke_args, write_png_folder

pytestmark = pytest.mark.slow


def _medssl(args: list[str], **kwargs) -> subprocess.Popen:
    root = str(Path(medssl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "medssl.cli", *args]
    return subprocess.Popen(
        command,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        **kwargs,
    )


def test_sigterm_checkpoints_and_exits_then_auto_resume_completes(tmp_path):
    overlay = tmp_path / "every_step.yaml"
    overlay.write_text(
        "trainer:\n  callbacks:\n    - class_path: medssl.reliability.checkpoints.RunCheckpoint\n"
        "      init_args: {save_last_every_n_steps: 1}\n"
    )
    run = tmp_path / "run"
    args = smoke_args(2, write_png_folder(tmp_path / "png", count=16), run, "--config", str(overlay))
    args += ["--trainer.max_epochs", "20", "--data.num_workers", "2", "--ckpt_path", "auto"]
    last = run / "checkpoints" / "last.ckpt"

    process = _medssl(args, start_new_session=True)  # its own process group, like a batch job
    deadline = time.monotonic() + 600
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, err
    step = torch.load(last, weights_only=True)["global_step"]
    assert f"medssl pretrain: stopped by SIGTERM at step {step}: saved {last}; resume with" in err
    assert "Traceback" not in err and 0 < step < 60
    assert not (run / "weights").exists()  # a stopped run is not a finished one

    process = _medssl(args)
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err
    assert torch.load(last, weights_only=True)["global_step"] == 60
