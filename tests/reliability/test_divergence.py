"""A NaN / Inf loss stops the run with a clear message and keeps the last good checkpoint, or (nan_policy
skip) skips the batch without an optimiser step and counts it."""

import csv
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from medssl.cli import main
from medssl.commands import pretrain
from medssl.methods.simclr import SimCLR
from medssl.reliability.divergence import MAX_CONSECUTIVE_SKIPS, DivergenceError, LossGuard

from .conftest import pretrain_args


def _nan_at(monkeypatch, steps):
    real = SimCLR.compute_loss

    def compute_loss(self, batch):
        losses = real(self, batch)
        if self.training and self.trainer.global_step in steps:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SimCLR, "compute_loss", compute_loss)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(png16, tmp_path, monkeypatch, capsys):
    _nan_at(monkeypatch, {4})
    run = tmp_path / "run"
    assert main(["pretrain", *pretrain_args("simclr", png16, run, "--trainer.max_epochs", "3")]) == 1
    err = capsys.readouterr().err
    last = run / "checkpoints" / "last.ckpt"
    assert "training diverged at step 4 (epoch 1, batch 2): non-finite loss terms: loss=nan" in err
    assert f"the last good checkpoint is kept: {last}" in err and "nan_policy: skip" in err
    assert "Traceback" not in err
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3  # the end of epoch 0, before the bad step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (run / "weights").exists()  # a diverged run exports nothing


class _Moved(pl.Callback):
    """The global steps after which the backbone's first weight had changed."""

    def __init__(self):
        self.steps, self.before = [], None

    def on_train_batch_start(self, trainer, module, *args):
        self.before = next(module.backbone.parameters()).detach().clone()

    def on_train_batch_end(self, trainer, module, *args):
        if not torch.equal(self.before, next(module.backbone.parameters())):
            self.steps.append(trainer.global_step)


def test_skip_policy_skips_and_counts_the_bad_batches(png16, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2, 5})
    run = tmp_path / "run"
    args = pretrain_args(
        "simclr", png16, run, "--trainer.max_epochs", "3", "--model.init_args.nan_policy", "skip"
    )
    moved = _Moved()
    pretrain.run(args, [moved])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["medssl"]["skipped_batches"] == 2 and ckpt["global_step"] == 9
    assert moved.steps == [1, 2, 4, 5, 7, 8, 9]  # the batches seen at steps 2 and 5 changed no weight
    logged = [
        float(r["train/skipped_batches"])
        for r in csv.DictReader((run / "metrics.csv").open())
        if r.get("train/skipped_batches")
    ]
    assert logged[0] == 0.0 and logged[-1] == 2.0


def _module():
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    loop = SimpleNamespace(
        epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(current=SimpleNamespace(ready=1)))
    )
    trainer = SimpleNamespace(
        strategy=strategy, global_step=7, current_epoch=0, fit_loop=loop, checkpoint_callback=None
    )
    return SimpleNamespace(trainer=trainer, log=lambda *a, **k: None)


def test_too_many_skips_in_a_row_still_stop():
    guard, module = LossGuard("skip"), _module()
    bad = {"loss": torch.tensor(float("inf")), "pixel": torch.tensor(float("inf"))}
    for _ in range(MAX_CONSECUTIVE_SKIPS - 1):
        assert guard.check(module, bad) is None
    assert guard.check(module, {"loss": torch.tensor(1.0)}) is not None and guard.consecutive == 0
    for _ in range(MAX_CONSECUTIVE_SKIPS - 1):
        guard.check(module, bad)
    with pytest.raises(
        DivergenceError, match=r"non-finite loss terms: loss=inf, pixel=inf; 20 batches in a row"
    ):
        guard.check(module, bad)
    with pytest.raises(ValueError, match="nan_policy must be one of stop, skip"):
        LossGuard("ignore")  # type: ignore[arg-type]
