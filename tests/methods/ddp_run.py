"""A few training steps of an SSL method on fixed views; the DDP half of ``tests/methods/test_ddp.py``.

Under torchrun (``python -m torch.distributed.run --nproc_per_node 2 ddp_run.py OUT CASE ...``) each rank
trains on its half of every global batch with Lightning's ``ddp`` strategy (gloo, CPU) and rank 0 saves what
it saw to ``OUT/ddp.pt``; the test imports this file and runs the one-process reference with whole batches.
Views are made once, seeded, so both sides train on the same tensors.

BatchNorm layers run in eval mode (fixed running statistics, every sample normalised on its own): CPU
cannot run ``SyncBatchNorm`` (DDP refuses it: "SyncBatchNorm layers only work with GPU modules"), and
without it per-rank batch statistics differ from whole-batch ones by design. Everything else (gathered
negatives, the queue, the DINO centre, DDP's gradient averaging, EMA, the schedule, logged metrics) is
compared exactly.

Both sides train in float64. In float32 the check depended on rounding: splitting a batch over two ranks (or
running on one thread instead of two) changes the order of float32 sums by ~1e-7, and JCL's InstanceNorm over
a few bottleneck voxels grew that to 1e-3 in three steps (100x the tolerance; the other methods stayed
within it), so whether it passed depended on the machine and on the thread count.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from monai.data import DataLoader, Dataset
from torch import nn
from torch.utils.data import default_collate

from medssl.evaluation.collapse import CollapseMonitor
from medssl.methods import METHODS, SSLMethod
from medssl.transforms.views import ViewAugment

STEPS = 3
GLOBAL_BATCH = 8
IMAGE = (1, 20, 20)
_RESNET = {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125, "small_input": True}}
_OPTIM = {"optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0.0, "spatial_dims": 2}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "simclr": ("simclr", {"hidden_dim": 16, "projection_dim": 8, "augment": ViewAugment(size=12)}),
    "moco_v2": (
        "moco",
        {"hidden_dim": 16, "projection_dim": 8, "queue_size": 64, "augment": ViewAugment(size=12)},
    ),
    "moco_v3": (
        "moco",
        {"version": "v3", "hidden_dim": 16, "projection_dim": 8, "augment": ViewAugment(size=12)},
    ),
    "dino": (
        "dino",
        {
            "hidden_dim": 16,
            "bottleneck_dim": 8,
            "output_dim": 32,
            "freeze_last_layer_epochs": 0,
            "global_augment": ViewAugment(size=16),
            "local_augment": ViewAugment(size=8),
            "num_local": 2,
        },
    ),
    "jcl": (
        "jcl",
        {
            "backbone": "unet",
            "backbone_kwargs": {"features": [4, 4, 8, 8, 16, 4]},
            "scale": 0.5,
            "hidden_dim": 16,
            "projection_dim": 8,
            "position_threshold": 0.2,  # positives widened by position: the mask spans the ranks too
            "augment": ViewAugment(size=(64, 128)),  # InstanceNorm over >= 8 bottleneck voxels
        },
    ),
}


def build(case: str) -> SSLMethod:
    name, options = CASES[case]
    torch.manual_seed(0)
    return METHODS.get(name)(**{**_RESNET, **_OPTIM, **options})


def fixed_views(method: SSLMethod, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` items of the method's views (and a normalised position), the same in every process."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, *IMAGE, generator=generator)
    positions = torch.rand(count, generator=generator)
    transform = method.view_transform().set_random_state(seed=2)
    return [transform({"image": image}) | {"position": p} for image, p in zip(images, positions, strict=True)]


class BatchNormEval(pl.Callback):
    """Hold every BatchNorm layer in eval mode, so that a sample's output does not depend on its batch."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        for module in pl_module.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class Record(pl.Callback):
    """Per optimiser step: the loss (mean over ranks) and the gradients after DDP averaged them."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        self.grads.append(grads)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, *args) -> None:
        self.losses.append(float(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")))


def train(case: str, devices: int, root: Path) -> dict[str, Any]:
    """Train ``STEPS`` steps of ``GLOBAL_BATCH`` images split over ``devices`` ranks; what rank 0 saw."""
    method = build(case)
    data = fixed_views(method, GLOBAL_BATCH * STEPS)
    loader = _loader(_share(data, devices), GLOBAL_BATCH // devices)
    val = _loader(_share(data[:GLOBAL_BATCH], devices), GLOBAL_BATCH // devices)
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision="64-true",  # see the module docstring
        use_distributed_sampler=False,  # _share: each rank gets its half of every global batch
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[BatchNormEval(), record, CollapseMonitor()],
    )
    trainer.fit(method, loader, val)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    return {"losses": record.losses, "grads": record.grads, "state": state, "metrics": metrics}


def _share(data: list[Any], devices: int) -> list[Any]:
    """This rank's items: the ``rank``-th slice of every global batch (all of them in one process)."""
    if devices == 1:
        return data
    rank, size = int(os.environ["RANK"]), GLOBAL_BATCH // devices
    starts = range(rank * size, len(data), GLOBAL_BATCH)
    return [item for start in starts for item in data[start : start + size]]


def _loader(data: list[Any], batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=default_collate)


def first_views_per_rank(num_workers: int, root: Path) -> torch.Tensor:
    """The first training batch's ``view_0`` of every rank, gathered: (ranks, B, C, H, W).

    Every image is the same, so views differ between ranks only if their augmentations are seeded apart.
    """
    method = build("simclr")
    items = [{"image": torch.ones(*IMAGE).cumsum(-1)} for _ in range(16)]
    loader = DataLoader(Dataset(items, method.view_transform()), batch_size=4, num_workers=num_workers)
    seen: list[torch.Tensor] = []

    class Grab(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                seen.append(pl_module.all_gather(batch["view_0"]))

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[Grab()],
    )
    trainer.fit(method, loader)
    return seen[0]


def main(out: Path, cases: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {case: train(case, 2, out / case) for case in cases}
    for workers in (0, 1):
        results[f"views_workers{workers}"] = first_views_per_rank(workers, out / f"views{workers}")
    if torch.distributed.get_rank() == 0:
        torch.save(results, out / "ddp.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
