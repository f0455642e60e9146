import copy
import itertools

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from medssl.methods import SSLMethod


class _EMAMethod(SSLMethod):
    """A minimal method with one EMA pair, to test the base class machinery."""

    def __init__(self, **base):
        super().__init__(**base)
        self.head = nn.Linear(self.backbone.num_features, 4)
        self.head_ema = copy.deepcopy(self.head).requires_grad_(False)
        self.ema_updates = 0

    def compute_loss(self, batch):
        loss = self.head(self.backbone(batch["view_0"])).pow(2).mean()
        return {"loss": loss + 0.0 * loss, "align": loss}

    def ema_pairs(self):
        self.ema_updates += 1
        return [(self.head, self.head_ema)]

    def ema_momentum(self):
        return 0.5


def _loader(n=8, batch_size=2):
    data = [{"view_0": torch.rand(1, 12, 12)} for _ in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=batch_size)


def _trainer(tmp_path, **kwargs):
    return pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_ema_updates_once_per_optimiser_step_with_accumulation(tmp_path, tiny):
    model = _EMAMethod(**tiny)
    before = model.head_ema.weight.clone()
    trainer = _trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit(model, _loader(n=8, batch_size=2))  # 4 batches -> 2 optimiser steps
    assert trainer.global_step == 2
    assert model.ema_updates == 2
    assert not torch.equal(before, model.head_ema.weight)
    assert all(p.grad is None for p in model.head_ema.parameters())


def test_named_terms_are_logged(tmp_path, tiny):
    model = _EMAMethod(**tiny)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _loader())
    assert {"train/loss_epoch", "train/loss_align_epoch"} <= set(trainer.logged_metrics)


def test_warmup_then_cosine_schedule(tmp_path, tiny):
    model = _EMAMethod(lr=0.1, warmup_epochs=1, min_lr_ratio=0.0, **tiny)
    trainer = _trainer(tmp_path, max_epochs=4)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(model, _loader(n=8, batch_size=2))  # 4 steps/epoch, 16 steps, 4 warm-up
    assert lrs[0] == pytest.approx(0.1 / 4)  # linear warm-up over 4 steps, no wasted step at lr 0
    assert max(lrs) == pytest.approx(0.1, rel=1e-6) and lrs.index(max(lrs)) == 3
    assert lrs[-1] < 0.01
    assert all(a < b for a, b in itertools.pairwise(lrs[:4]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))


def test_warmup_counts_loader_passes_when_the_run_ends_by_max_steps(tmp_path, tiny):
    model = _EMAMethod(lr=0.1, warmup_epochs=1, min_lr_ratio=0.0, **tiny)
    trainer = _trainer(tmp_path, max_epochs=-1, max_steps=12)
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(model, _loader(n=8, batch_size=2))  # 4 steps per pass: 4 warm-up steps of 12
    assert len(lrs) == 12 and lrs.index(max(lrs)) == 3 and lrs[-1] < 0.01


def test_no_weight_decay_on_biases_and_norms(tiny):
    model = _EMAMethod(weight_decay=0.5, **tiny)
    groups = model._build_optimizer().param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.5 and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        if p.requires_grad and p.ndim <= 1:
            assert id(p) not in decayed, name


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_optimizers(tiny, name):
    assert _EMAMethod(optimizer=name, **tiny)._build_optimizer() is not None


def test_unknown_backbone_option_is_rejected(tiny):
    with pytest.raises((TypeError, ValueError), match="widen"):
        _EMAMethod(backbone="resnet10", backbone_kwargs={"widenfactor": 0.5})
