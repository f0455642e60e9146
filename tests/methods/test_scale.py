"""Mixed precision, gradient accumulation, gradient checkpointing, channels-last and SyncBN, every method."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import CosineWarmupScheduler
from pytorch_lightning.plugins import TorchSyncBatchNorm
from torch import nn
from torch.utils.data import DataLoader

from medssl.backbones import build_backbone
from medssl.methods import METHODS, MoCo, SimCLR
from medssl.ops.precision import in_float32

from .test_contract import CASES, IMAGE, _batch, _build

PRECISIONS = [
    "bf16-mixed",
    pytest.param("16-mixed", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")),
]


def _trainer(tmp_path, **kwargs):
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


class _Losses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name, dims", CASES)
def test_mixed_precision_trains_every_method(name, dims, precision, tmp_path):
    method = _build(name, dims)
    batches = [_batch(method, dims) for _ in range(3)]  # 3 steps: the EMA momentum is 1 at the last
    buffers = {k: v.dtype for k, v in method.named_buffers()}
    ema_before = [[p.clone() for p in ema.parameters()] for _, ema in method.ema_pairs()]
    losses = _Losses()
    accelerator = "gpu" if precision == "16-mixed" else "cpu"
    trainer = _trainer(
        tmp_path, precision=precision, accelerator=accelerator, max_steps=3, callbacks=[losses]
    )
    # oneDNN's bf16 conv backward gave non-finite weight gradients at the tiny deepest 3D level on AVX512-BF16
    # CPUs (most one-thread JCL runs on an AMD EPYC, none of 8 without oneDNN): a PyTorch kernel issue
    with torch.backends.mkldnn.flags(enabled=accelerator != "cpu"):
        trainer.fit(method, DataLoader(batches, batch_size=None))
    assert len(losses.losses) == 3
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses.losses)
    assert all(p.dtype == torch.float32 for p in method.parameters())  # master weights stay float32
    assert {k: v.dtype for k, v in method.named_buffers()} == buffers  # queue, centre, BN stats
    for (_, ema), before in zip(method.ema_pairs(), ema_before, strict=True):
        assert any(not torch.equal(p.cpu(), b) for p, b in zip(ema.parameters(), before, strict=True))


def test_losses_run_in_float32_with_autocast_off():
    seen = {}

    def loss(a, pair):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtypes"] = (a.dtype, pair[0].dtype)
        return (a @ pair[1].T).sum()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = nn.Linear(4, 4)(torch.rand(2, 4))
        assert x.dtype == torch.bfloat16
        out = in_float32(loss, x, [x, x])
    assert seen == {"autocast": False, "dtypes": (torch.float32, torch.float32)}
    assert out.dtype == torch.float32


def test_losses_stay_in_float64_under_64_true():
    x = torch.rand(2, 4, dtype=torch.float64)
    out = in_float32(lambda a, pair: (a @ pair[1].T).sum(), x, [x, x])
    assert out.dtype == torch.float64  # not rounded down to float32


def test_schedule_steps_once_per_optimiser_step_with_accumulation(tmp_path, tiny):
    torch.manual_seed(0)
    model = SimCLR(lr=0.1, warmup_epochs=1, min_lr_ratio=0.0, hidden_dim=8, projection_dim=4, **tiny)
    batches = [{"view_0": torch.rand(2, 1, 12, 12), "view_1": torch.rand(2, 1, 12, 12)} for _ in range(8)]
    at_batch, at_step = [], []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            at_batch.append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            at_step.append(optimizer.param_groups[0]["lr"])

    trainer = _trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2, callbacks=[Record()])
    trainer.fit(model, DataLoader(batches, batch_size=None))  # 2 epochs x 8 batches / 2 = 8 optimiser steps
    assert trainer.global_step == 8 and len(at_step) == 8 and len(at_batch) == 16
    assert at_batch[0::2] == at_batch[1::2]  # the lr moves only after a real optimiser step
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = CosineWarmupScheduler(reference, warmup_epochs=4, max_epochs=8, end_value=0.0)
    expected = []
    for _ in range(8):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        schedule.step()
    assert at_step == pytest.approx(expected)
    assert trainer.lr_scheduler_configs[0].interval == "step"


@pytest.mark.parametrize("dims", [2, 3])
def test_gradient_checkpointing_recomputes_blocks_with_the_same_gradients(dims):
    vit = {"img_size": list(IMAGE[dims]), "patch_size": 4 if dims == 3 else 8}
    vit.update(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        method = METHODS.get("mae")(
            spatial_dims=dims,
            backbone="vit_tiny",
            backbone_kwargs={**vit, "grad_checkpointing": checkpointing},
            decoder_dim=16,
            decoder_depth=1,
            decoder_heads=2,
        )
        calls: list[int] = []
        for block in (method.backbone.blocks[0], method.decoder_blocks[0]):  # encoder and decoder
            block.register_forward_pre_hook(lambda *args, calls=calls: calls.append(1))
        torch.manual_seed(1)  # the same mask
        loss = method.compute_loss({"view_0": torch.rand(2, 1, *IMAGE[dims])})["loss"]
        loss.backward()
        grads = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, len(calls)))
    (loss_plain, grads_plain, calls_plain), (loss_ckpt, grads_ckpt, calls_ckpt) = results
    assert (calls_plain, calls_ckpt) == (2, 4)  # forward, then once more in the backward pass
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name, dims", [("resnet10", 2), ("resnet10", 3), ("unet", 2)])
def test_channels_last_changes_the_layout_not_the_results(name, dims):
    options = (
        {"widen_factor": 0.125, "small_input": True}
        if name == "resnet10"
        else {"features": [4, 4, 8, 8, 16, 4]}
    )
    shape = (2, 1, 32, 32) if dims == 2 else (2, 1, 16, 16, 16)
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    x = torch.rand(shape)
    outputs = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = build_backbone(name, spatial_dims=dims, in_channels=1, channels_last=channels_last, **options)
        out = net(x)
        out.square().sum().backward()
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        conv = next(c for c in convs if c.in_channels > 1 and max(c.kernel_size) > 1)  # layout not ambiguous
        assert conv.weight.is_contiguous(memory_format=layout) == channels_last
        outputs.append((out.detach(), conv.weight.grad))
        if channels_last:
            net.plain_network().load_state_dict(net.state_dict(), strict=True)
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs[1][1], outputs[0][1], rtol=1e-4, atol=1e-4)


def test_sync_batchnorm_converts_online_momentum_and_head_norms_alike(tiny):
    method = MoCo(version="v3", hidden_dim=8, projection_dim=4, **tiny)
    TorchSyncBatchNorm().apply(method)  # what --trainer.sync_batchnorm true does under DDP
    for name in ("backbone", "key_backbone", "projection_head", "key_projection_head"):
        norms = [m for m in getattr(method, name).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms), name
    assert not any(p.requires_grad for p in method.key_backbone.parameters())
    for online, ema in method.ema_pairs():  # the EMA pairs still match parameter for parameter
        update_momentum(online, ema, m=0.5)
