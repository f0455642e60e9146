"""Short form of benchmarks/fault_injection.py: SIGKILL a pretraining subprocess (once at a random step,
once in the middle of a checkpoint write), resume from last.ckpt each time, compare with an unkilled run."""

import argparse
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fault_injection.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_at_random_moments_and_in_a_save_then_resume_continues_the_curve(tmp_path):
    fi = _benchmark()
    args = argparse.Namespace(
        kills=1, kill_in_save=1, every=3, epochs=3, images=24, seed=1, timeout=600.0, work=tmp_path
    )
    result = fi.run_benchmark(args)
    assert result["passed"], result
    assert result["trials"] == 2 and result["planned_steps"] == 12
    assert 0 <= result["max_steps_lost"] <= 3
    assert result["max_abs_loss_diff_vs_reference"] <= 1e-6
    saved_mid_write = next(k for k in result["kills"] if k["kind"] == "in_save")
    assert saved_mid_write["returncode"] == -9  # it really died in the write, and last.ckpt still loaded
