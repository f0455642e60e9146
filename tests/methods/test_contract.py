"""One contract over every registered SSL method, in 2D and 3D, on tiny backbones.

Adding a method = adding its tiny options to ``TINY``; the test fails for a method that has none.
"""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, default_collate

from medssl.methods import METHODS, list_methods
from medssl.transforms.views import ViewAugment

IMAGE = {2: (32, 32), 3: (16, 16, 16)}
RESNET = {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125, "small_input": True}}


def _vit(dims):
    size = IMAGE[dims]
    return {
        "backbone": "vit_tiny",
        "backbone_kwargs": {
            "img_size": list(size),
            "patch_size": 4 if dims == 3 else 8,
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "mlp_dim": 64,
        },
    }


TINY = {
    "mae": lambda dims: {**_vit(dims), "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    "moco": lambda dims: {
        **RESNET,
        "hidden_dim": 16,
        "projection_dim": 8,
        "queue_size": 64,
        "augment": ViewAugment(size=12),
    },
    "dino": lambda dims: {
        **RESNET,
        "hidden_dim": 16,
        "bottleneck_dim": 8,
        "output_dim": 32,
        "global_augment": ViewAugment(size=16),
        "local_augment": ViewAugment(size=8),
        "num_local": 2,
    },
    "jcl": lambda dims: {
        "backbone_kwargs": {"features": [4, 4, 8, 8, 16, 4]},
        "scale": 0.5,
        "augment": ViewAugment(size=64 if dims == 2 else (32, 64, 32)),
        "hidden_dim": 16,
        "projection_dim": 8,
    },
    "mim": lambda dims: {
        "backbone_kwargs": {"features": [4, 4, 8, 8, 16, 4]},
        "mask_patch": 4,
        "augment": ViewAugment(size=32 if dims == 2 else (16, 32, 16)),
    },
    "simclr": lambda dims: {**RESNET, "hidden_dim": 16, "projection_dim": 8, "augment": ViewAugment(size=12)},
}


def _build(name, dims):
    if name not in TINY:
        pytest.fail(f"method {name!r} has no entry in TINY (tests/methods/test_contract.py)")
    torch.manual_seed(0)
    return METHODS.get(name)(spatial_dims=dims, **TINY[name](dims))


def _batch(method, dims, size=4):
    views = method.view_transform()
    return default_collate([views({"image": torch.rand(1, *IMAGE[dims])}) for _ in range(size)])


CASES = [(name, dims) for name in list_methods() for dims in (2, 3)]


@pytest.mark.parametrize("name, dims", CASES)
def test_loss_is_finite_and_every_trainable_parameter_gets_a_gradient(name, dims):
    method = _build(name, dims)
    losses = method.compute_loss(_batch(method, dims))
    assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    for _online, ema in method.ema_pairs():
        assert all(not p.requires_grad and p.grad is None for p in ema.parameters())


class _CheckEMA(pl.Callback):
    """Before each batch, check that the EMA copies moved by exactly the EMA rule since the last batch."""

    def __init__(self):
        self.before = None
        self.checked = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        pairs = module.ema_pairs()
        if self.before is not None:
            momentum = module.ema_momentum()  # the value used for the update after the last step
            for (online, ema), old in zip(pairs, self.before, strict=True):
                for p_online, p_ema, p_old in zip(online.parameters(), ema.parameters(), old, strict=True):
                    expected = momentum * p_old + (1 - momentum) * p_online.detach()
                    assert torch.allclose(p_ema, expected, atol=1e-6)
            self.checked += 1
        self.before = [[p.detach().clone() for p in ema.parameters()] for _, ema in pairs]


@pytest.mark.parametrize("name, dims", CASES)
def test_ema_parameters_change_only_by_the_ema_rule(name, dims, tmp_path):
    method = _build(name, dims)
    batches = [_batch(method, dims) for _ in range(3)]
    check = _CheckEMA()
    trainer = pl.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[check],
    )
    trainer.fit(method, DataLoader(batches, batch_size=None))
    assert check.checked == 2  # after steps 1 and 2, when the momentum is not yet its final value


@pytest.mark.parametrize("name, dims", CASES)
def test_one_batch_fast_dev_run(name, dims, tmp_path):
    method = _build(name, dims)
    batches = [_batch(method, dims)]
    trainer = pl.Trainer(
        fast_dev_run=1, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.fit(method, DataLoader(batches, batch_size=None), DataLoader(batches, batch_size=None))
    assert trainer.state.finished


#: Only the random resized crop: makes the crop extent measurable on a ramp image.
CROP_ONLY = {"flip_prob": 0.0, "intensity": 0.0, "gamma": (1.0, 1.0), "blur_prob": 0.0, "noise_std": 0.0}


@pytest.mark.parametrize("name", ["simclr", "moco", "dino"])
def test_view_region_keeps_every_view_of_an_image_inside_one_window(name):
    """On a ramp along the first axis, the views of one image together span at most ``view_region``."""
    side = 64
    options = TINY[name](2)
    for key in ("augment", "global_augment", "local_augment"):
        if key in options:
            options[key] = ViewAugment(size=options[key].size, **CROP_ONLY)
    views = METHODS.get(name)(spatial_dims=2, view_region=0.25, **options).view_transform()
    ramp = torch.arange(side, dtype=torch.float32).view(1, side, 1).expand(1, side, side).clone()
    for _ in range(5):
        values = torch.cat([v.flatten() for v in views({"image": ramp}).values()])
        assert values.max() - values.min() + 1 <= 0.25 * side


@pytest.mark.parametrize("name", ["simclr", "moco", "dino"])
def test_a_bad_view_region_is_refused_when_the_method_is_built(name):
    with pytest.raises(ValueError, match="0 < region <= 1"):
        METHODS.get(name)(spatial_dims=2, view_region=1.5, **TINY[name](2))
