"""The launch examples (examples/launch/) parse, and the medssl command each one builds resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import medssl
from medssl.recipes_dir import recipes_dir

ROOT = Path(medssl.__file__).resolve().parents[1]
LAUNCH = ROOT / "examples" / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.iterdir())
RECIPE = recipes_dir() / "pretrain" / "simclr_resnet18_pneumoniamnist_2d.yaml"


def test_the_three_launch_examples_exist():
    assert SCRIPTS == ["multi_gpu_torchrun.sh", "single_gpu.sh", "slurm.sbatch"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash(script):
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


@pytest.mark.slow  # a Python start-up (torch, Lightning, MONAI) per script
@pytest.mark.parametrize(
    "script, expected",
    [
        ("single_gpu.sh", {"devices": 1}),
        ("multi_gpu_torchrun.sh", {"devices": 1, "strategy": "ddp", "sync_batchnorm": True}),
        ("slurm.sbatch", {"devices": 1, "num_nodes": 1, "strategy": "ddp", "sync_batchnorm": True}),
    ],
)
def test_script_builds_a_command_that_resolves(script, expected, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    os.utime(run / "checkpoints" / "last.ckpt", (1, 1))
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"")  # what Lightning saves on SIGUSR1: newer than last.ckpt
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "GPUS": "1",  # torchrun with one process: no GPU needed to print the config
        "SRUN": "",  # run the SLURM command directly
        "RUN_DIR": str(run),
    }
    args = ["bash", str(LAUNCH / script), str(RECIPE), "--trainer.max_epochs", "3", "--print_config"]
    proc = subprocess.run(
        args,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load(proc.stdout)
    trainer = config["trainer"]
    assert trainer["accelerator"] == "gpu" and trainer["precision"] == "bf16-mixed"
    assert trainer["max_epochs"] == 3  # extra arguments reach medssl pretrain
    assert {key: str(trainer[key]) for key in expected} == {k: str(v) for k, v in expected.items()}
    assert config["model"]["class_path"].endswith("SimCLR")
    if script == "slurm.sbatch":  # a requeued job resumes from the newest checkpoint of its run
        assert config["ckpt_path"] == str(run / "hpc_ckpt_1.ckpt")
        assert trainer["default_root_dir"] == str(run)
