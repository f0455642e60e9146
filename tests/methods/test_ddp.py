"""Two DDP ranks (CPU, gloo) x batch B train exactly like one process with batch 2B.

The DDP side runs once for all cases under torchrun (``ddp_run.py``, ~30 s); each case then compares, step by
step, the loss and every gradient, and at the end every parameter and buffer (EMA teacher / key encoder,
MoCo queue, DINO centre) and the logged epoch metrics, within 1e-9: both sides train in float64. BatchNorm is
held in eval mode (see ``ddp_run.py``: CPU has no SyncBatchNorm).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import medssl

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("ddp_run", HERE / "ddp_run.py")
assert _spec is not None and _spec.loader is not None
ddp_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_run)

TOLERANCE = {"rtol": 1e-9, "atol": 1e-9}
APPROX = {"rel": 1e-9, "abs": 1e-9}
QUEUE = "criterion.memory_bank.bank"


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    root = str(Path(medssl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(HERE / "ddp_run.py"), str(out), *ddp_run.CASES]
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return torch.load(out / "ddp.pt", weights_only=True)


def _rows_sorted(queue: torch.Tensor) -> torch.Tensor:
    """The queue's keys in a canonical order: which rank's keys enter first does not matter."""
    return queue[queue[:, 0].argsort()]


@pytest.mark.parametrize("case", ddp_run.CASES)
def test_two_ranks_equal_one_process_with_the_whole_batch(ddp, case, tmp_path):
    single, two = ddp_run.train(case, 1, tmp_path), ddp[case]
    assert len(single["losses"]) == len(two["losses"]) == ddp_run.STEPS
    assert two["losses"] == pytest.approx(single["losses"], **APPROX)
    for step, (grads_1, grads_2) in enumerate(zip(single["grads"], two["grads"], strict=True)):
        assert grads_1.keys() == grads_2.keys(), step
        for name in grads_1:
            where = f"step {step}: {name}"
            torch.testing.assert_close(
                grads_2[name], grads_1[name], **TOLERANCE, msg=lambda m, w=where: f"{w}: {m}"
            )
    assert single["state"].keys() == two["state"].keys()
    for name, value in single["state"].items():
        other = two["state"][name]
        if name == QUEUE:
            value, other = _rows_sorted(value), _rows_sorted(other)
        torch.testing.assert_close(other, value, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
    logged = {"train/loss_epoch", "val/loss", "val/embedding_std", "val/effective_rank"}
    assert logged <= single["metrics"].keys()
    for key in logged:  # reduced over the ranks, not rank 0's share
        assert two["metrics"][key] == pytest.approx(single["metrics"][key], **APPROX), key


@pytest.mark.parametrize("workers", [0, 1])
def test_each_rank_draws_its_own_augmentations(ddp, workers):
    views = ddp[f"views_workers{workers}"]  # (ranks, B, C, H, W) of identical images
    assert views.shape[0] == 2
    assert not torch.allclose(views[0], views[1])
