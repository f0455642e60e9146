"""The two training workloads the speed benchmarks time, each as a medssl method and as plain PyTorch.

- ``simclr_resnet18``: SimCLR, ResNet-18 2D (standard stem), 64 px, batch 64 (two views: 128 images a step),
  projection 512 -> 128, NT-Xent at temperature 0.1;
- ``mae_vit_tiny``: MAE, ViT-Tiny 2D, 64 px, patch 8 (64 tokens), mask ratio 0.75, batch 64, decoder 128
  wide x 2 blocks.

The plain side is what a user would write by hand from the same libraries: the plain MONAI network with the
medssl model's weights copied in, lightly's head and loss (SimCLR) or the MAE algorithm written out in
torch ops (MAE), AdamW with the same no-decay groups, lightly's warm-up + cosine schedule stepped per step,
``torch.autocast`` for bf16. Both sides get the same ready-made batch, so no data loading is timed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from bench_utils import quiet_trainer, repeat_loader
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils.scheduler import CosineWarmupScheduler
from pytorch_lightning.callbacks import LearningRateMonitor
from torch import Tensor, nn

from medssl.backbones.base import channels_last_format
from medssl.loggers import default_loggers
from medssl.methods import MAE, SimCLR, SSLMethod
from medssl.optim import skips_decay

SIZE, BATCH = 64, 64
MAE_PATCH, MAE_RATIO = 8, 0.75
VIT_TINY = {"hidden_size": 192, "num_layers": 12, "num_heads": 3, "mlp_dim": 768}
WORKLOADS = ("simclr_resnet18", "mae_vit_tiny")


def title(workload: str) -> str:
    if workload == "simclr_resnet18":
        return f"SimCLR ResNet-18 2D, {SIZE} px, batch {BATCH}"
    return f"MAE ViT-Tiny 2D, {SIZE} px, patch {MAE_PATCH}, mask {MAE_RATIO}, batch {BATCH}"


def shrink_for_smoke_test() -> None:
    """32 px, batch 4: the same architectures and code paths in seconds (``--quick``)."""
    global SIZE, BATCH
    SIZE, BATCH = 32, 4


def medssl_method(workload: str, channels_last: bool = False) -> SSLMethod:
    torch.manual_seed(0)
    if workload == "simclr_resnet18":
        return SimCLR(
            backbone="resnet18",
            backbone_kwargs={"channels_last": channels_last},
            spatial_dims=2,
            temperature=0.1,
        )
    vit = {"img_size": SIZE, "patch_size": MAE_PATCH, **VIT_TINY}
    return MAE(
        backbone="vit_tiny",
        backbone_kwargs=vit,
        spatial_dims=2,
        mask_ratio=MAE_RATIO,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        save_reconstructions=False,
    )


def fixed_batch(workload: str) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    views = 2 if workload == "simclr_resnet18" else 1
    return {f"view_{i}": torch.rand(BATCH, 1, SIZE, SIZE, generator=g) for i in range(views)}


class PlainSimCLR(nn.Module):
    """MONAI ResNet-18 + lightly head + lightly NT-Xent, nothing from medssl but the copied weights."""

    def __init__(self, method: SimCLR, channels_last: bool) -> None:
        super().__init__()
        self.backbone = method.backbone.plain_network()
        self.backbone.load_state_dict(method.backbone.state_dict())
        self.head = SimCLRProjectionHead(512, 512, 128)
        self.head.load_state_dict(method.projection_head.state_dict())
        self.criterion = NTXentLoss(temperature=0.1)
        self.layout = channels_last_format(2) if channels_last else torch.contiguous_format
        self.to(memory_format=self.layout)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        views = torch.cat([batch["view_0"], batch["view_1"]]).contiguous(memory_format=self.layout)
        z0, z1 = self.head(self.backbone(views)).chunk(2)
        with torch.autocast("cpu", enabled=False):
            return self.criterion(z0.float(), z1.float())


class PlainMAE(nn.Module):
    """The MAE algorithm written out in torch ops over the plain MONAI ViT and torch decoder blocks."""

    def __init__(self, method: MAE) -> None:
        super().__init__()
        self.vit = method.backbone.plain_network()
        self.vit.load_state_dict(method.backbone.state_dict())
        for name in ("decoder_embed", "decoder_blocks", "decoder_norm", "decoder_pred"):
            setattr(self, name, copy.deepcopy(getattr(method, name)))
        self.mask_token = nn.Parameter(method.mask_token.detach().clone())
        self.decoder_pos_embed = nn.Parameter(method.decoder_pos_embed.detach().clone())
        self.num_patches = (SIZE // MAE_PATCH) ** 2

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["view_0"]
        b, length = x.shape[0], self.num_patches
        keep = round(length * (1 - MAE_RATIO))
        ids_shuffle = torch.rand(b, length).argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        tokens = self.vit.patch_embedding(x)  # (B, L, D)
        tokens = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].expand(-1, -1, tokens.shape[-1]))
        for block in self.vit.blocks:
            tokens = block(tokens)
        tokens = self.decoder_embed(self.vit.norm(tokens))
        tokens = torch.cat([tokens, self.mask_token.expand(b, length - keep, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, tokens.shape[-1]))
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(tokens + self.decoder_pos_embed)))
        p, g = MAE_PATCH, SIZE // MAE_PATCH
        target = x.reshape(b, 1, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, length, p * p)
        mask = torch.ones(b, length)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        with torch.autocast("cpu", enabled=False):
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
            per_patch = (pred.float() - target).pow(2).mean(-1)
            return (per_patch * mask).sum() / mask.sum()


def plain_model(workload: str, method: SSLMethod, channels_last: bool = False) -> nn.Module:
    if isinstance(method, SimCLR):
        return PlainSimCLR(method, channels_last)
    assert isinstance(method, MAE)
    return PlainMAE(method)


def make_optimizer(model: nn.Module, steps: int) -> tuple[torch.optim.Optimizer, CosineWarmupScheduler]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if skips_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    return optimizer, CosineWarmupScheduler(optimizer, warmup_epochs=1, max_epochs=steps, end_value=0.01)


def plain_stepper(
    model: nn.Module, batch: dict[str, Tensor], total_steps: int, bf16: bool
) -> Callable[[], None]:
    """One hand-written training step per call (AdamW + per-step schedule, kept across calls)."""
    optimizer, schedule = make_optimizer(model, total_steps)

    def step() -> None:
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

    return step


class Interleave(pl.Callback):
    """At the start of every medssl batch, one step of each plain loop, timed on its own.

    The medssl step ``k`` is the time from the start of batch ``k`` to the start of batch ``k + 1`` minus the
    plain steps run in between, so it holds all Lightning does per batch (fetch, hooks, logging, optimiser,
    scheduler) and the two sides alternate step by step: a change of machine load hits both.
    """

    def __init__(self, plain: dict[str, Callable[[], None]]) -> None:
        self.plain = plain
        self.starts: list[float] = []
        self.times: dict[str, list[float]] = {name: [] for name in plain}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        for name, step in self.plain.items():
            start = time.perf_counter()
            step()
            self.times[name].append(time.perf_counter() - start)
        self.starts.append(time.perf_counter())

    def step_times(self, skip: int) -> dict[str, list[float]]:
        plain_between = [sum(t[k] for t in self.times.values()) for k in range(1, len(self.starts))]
        medssl = [b - a - p for a, b, p in zip(self.starts, self.starts[1:], plain_between, strict=False)]
        return {"medssl": medssl[skip:]} | {name: t[1 + skip :] for name, t in self.times.items()}


def interleaved_fit(
    method: SSLMethod,
    batch: dict[str, Tensor],
    steps: int,
    precision: str,
    root: Path,
    like_recipe: bool,
    plain: dict[str, Callable[[], None]],
    skip: int = 1,
) -> dict[str, list[float]]:
    """``Trainer.fit`` for ``steps`` batches with the ``plain`` steps interleaved; step times per side.

    ``like_recipe``: what a run of ``recipes/base/pretrain.yaml`` does at every step (CSV + TensorBoard
    loggers every 10 steps, the learning-rate monitor, the progress bar); checkpointing and the weights
    export happen at the end of a run, outside the timed steps, and are left out.
    """
    interleave = Interleave(plain)
    options: dict[str, Any] = {"max_steps": steps, "precision": precision, "callbacks": [interleave]}
    if like_recipe:
        options["callbacks"].append(LearningRateMonitor(logging_interval="step"))
        options |= {"logger": default_loggers(root), "log_every_n_steps": 10, "enable_progress_bar": True}
    quiet_trainer(root, **options).fit(method, repeat_loader(batch, steps))
    return interleave.step_times(skip)


def check_same_loss(workload: str, method: SSLMethod, plain: nn.Module) -> dict[str, float]:
    """Both sides compute the same loss on the same batch (MAE: with the same mask)."""
    batch = fixed_batch(workload)
    method.eval(), plain.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        ours = float(method.compute_loss(batch)["loss"])
        torch.manual_seed(3)
        theirs = float(plain.loss(batch))
    method.train(), plain.train()
    if not math.isclose(ours, theirs, rel_tol=1e-4):
        raise AssertionError(f"{workload}: medssl loss {ours} != plain loss {theirs}")
    return {"medssl": ours, "plain": theirs}
