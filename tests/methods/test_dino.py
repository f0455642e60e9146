import math
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from medssl.cli import main
from medssl.methods.base import METHODS
from medssl.methods.dino import DINO
from medssl.recipes_dir import recipes_dir
from medssl.transforms.views import ViewAugment

HEAD = {"hidden_dim": 16, "bottleneck_dim": 8, "output_dim": 32}
CROPS = {"global_augment": ViewAugment(size=16), "local_augment": ViewAugment(size=8), "num_local": 2}
TINY_VIT = {"patch_size": 8, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64}


def reference_dino_loss(teacher, student, center, teacher_temp, student_temp):
    """DINOLoss.forward of facebookresearch/dino: mean CE over (teacher global, other student crop) pairs."""
    total, n_terms = 0.0, 0
    for iq, q in enumerate(teacher):
        q = F.softmax((q - center) / teacher_temp, dim=-1)
        for v, s in enumerate(student):
            if v == iq:  # same crop seen by both
                continue
            total += torch.sum(-q * F.log_softmax(s / student_temp, dim=-1), dim=-1).mean()
            n_terms += 1
    return total / n_terms


def _model(tiny, spatial_dims=2, **kwargs):
    torch.manual_seed(0)
    return DINO(spatial_dims=spatial_dims, **HEAD, **CROPS, **tiny, **kwargs)


def _batch(spatial_dims=2, b=3):
    crops = {f"global_{i}": torch.rand((b, 1) + (16,) * spatial_dims) for i in range(2)}
    return crops | {f"local_{i}": torch.rand((b, 1) + (8,) * spatial_dims) for i in range(2)}


def _outputs(b=3, k=32, views=4):
    torch.manual_seed(1)
    return [torch.randn(b, k) for _ in range(2)], [torch.randn(b, k) for _ in range(views)]


def test_registered():
    assert METHODS.get("dino") is DINO


def test_loss_matches_the_reference_formula(tiny):
    model = _model(tiny, student_temp=0.2, teacher_temp=0.05)
    model.criterion.center.copy_(torch.randn(1, 1, 32))
    teacher, student = _outputs()
    expected = reference_dino_loss(teacher, student, model.criterion.center[0], 0.05, 0.2)
    assert model._loss(teacher, student)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_compute_loss_is_the_loss_of_teacher_globals_and_all_student_crops(tiny, spatial_dims):
    model = _model(tiny, spatial_dims).eval()  # eval: batch norm per sample, centre left alone
    batch = _batch(spatial_dims)
    loss = model.compute_loss(batch)["loss"]
    with torch.no_grad():
        student = [model.projection_head(model.backbone(v)) for v in batch.values()]
        teacher = [model.teacher_head(model.teacher_backbone(batch[f"global_{i}"])) for i in range(2)]
    expected = reference_dino_loss(teacher, student, torch.zeros(32), 0.04, 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.count_nonzero(model.criterion.center) == 0  # validation does not move the centre


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_backward_reaches_the_student_only(tiny, spatial_dims):
    model = _model(tiny, spatial_dims)
    model.compute_loss(_batch(spatial_dims))["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    teacher = [*model.teacher_backbone.parameters(), *model.teacher_head.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in teacher)


def test_teacher_temperature_warms_up_by_epoch(tiny, monkeypatch):
    model = _model(tiny, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    teacher, student = _outputs()
    for epoch, temp in [(0, 0.04), (1, 0.055), (3, 0.07), (10, 0.07)]:
        monkeypatch.setattr(DINO, "current_epoch", property(lambda self, e=epoch: e))
        model.criterion.center.zero_()
        expected = reference_dino_loss(teacher, student, torch.zeros(32), temp, 0.1)
        assert model._loss(teacher, student)["loss"].item() == pytest.approx(expected.item(), rel=1e-5), epoch


def test_loss_is_teacher_entropy_plus_kl_and_the_constant_student_is_the_mean_teacher(tiny):
    model = _model(tiny, teacher_temp=0.5)  # soft enough that no probability underflows in the reference
    model.criterion.center.copy_(torch.randn(1, 1, 32))
    center = model.criterion.center.clone()
    teacher, student = _outputs()
    terms = model._loss(teacher, student)
    probs = [F.softmax((t - center[0]) / 0.5, dim=-1) for t in teacher]  # 2 x (B, K)
    entropy = torch.stack([-(p * p.log()).sum(-1).mean() for p in probs]).mean()
    mean = torch.cat(probs).mean(0)
    assert terms["teacher_entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    assert (terms["teacher_entropy"] + terms["kl"]).item() == pytest.approx(terms["loss"].item(), rel=1e-6)
    assert terms["constant_student"].item() == pytest.approx(-(mean * mean.log()).sum().item(), rel=1e-5)
    # the best input-blind student predicts the mean teacher distribution and scores exactly that
    blind = [mean.log().expand(3, -1) * 0.1] * 4  # log-probabilities times the student temperature
    model.criterion.center.copy_(center)  # the first call moved it
    assert model._loss(teacher, blind)["loss"].item() == pytest.approx(
        terms["constant_student"].item(), rel=1e-4
    )


def test_a_uniform_teacher_gives_log_k_for_entropy_and_constant_student(tiny):
    model = _model(tiny)
    teacher, student = [torch.zeros(3, 32)] * 2, _outputs()[1]
    terms = model._loss(teacher, student)
    assert terms["teacher_entropy"].item() == pytest.approx(math.log(32), rel=1e-6)
    assert terms["constant_student"].item() == pytest.approx(math.log(32), rel=1e-6)
    assert terms["kl"].item() >= 0


def test_centre_follows_the_ema_rule_and_is_saved(tiny):
    model = _model(tiny, center_momentum=0.8)
    teacher, student = _outputs()
    old = torch.randn(1, 1, 32)
    model.criterion.center.copy_(old)
    model._loss(teacher, student)
    expected = 0.8 * old + 0.2 * torch.stack(teacher).mean(dim=(0, 1), keepdim=True)
    assert torch.allclose(model.criterion.center, expected, atol=1e-6)
    assert torch.equal(model.state_dict()["criterion.center"], model.criterion.center)


def test_momentum_follows_a_cosine_from_start_to_one(tiny):
    model = _model(tiny, momentum_start=0.99)
    assert model.ema_momentum() == 0.99  # no trainer yet
    moments = []
    for step in (0, 5, 10):  # lightly: cos(pi * step / (max_steps - 1))
        model._trainer = SimpleNamespace(global_step=step, estimated_stepping_batches=11)
        moments.append(model.ema_momentum())
    assert moments == pytest.approx([0.99, 0.995, 1.0])


def test_last_layer_frozen_in_the_first_epoch_then_trained(tiny, tmp_path):
    model = _model(tiny, freeze_last_layer_epochs=1, norm_last_layer=False)
    grads: dict[int, list[float]] = {0: [], 1: []}

    class Record(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            g = [p.grad for p in pl_module.projection_head.last_layer.parameters()]
            grads[trainer.current_epoch].append(sum(0.0 if x is None else x.abs().sum().item() for x in g))

    data = [_batch(b=1) for _ in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=lambda xs: _collate(xs))
    teacher_before = [p.clone() for p in model.teacher_head.parameters()]
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(model, loader)
    assert grads[0] == [0.0, 0.0]
    assert all(g > 0 for g in grads[1]) and len(grads[1]) == 2
    assert any(
        not torch.equal(a, b) for a, b in zip(teacher_before, model.teacher_head.parameters(), strict=True)
    )


def _collate(items):
    return {k: torch.cat([i[k] for i in items]) for k in items[0]}


def test_view_transform_feeds_compute_loss(tiny):
    model = _model(tiny, spatial_dims=3)
    views = [model.view_transform()({"image": torch.rand(1, 20, 20, 20)}) for _ in range(2)]
    loss = model.compute_loss(_collate([{k: v[None] for k, v in x.items()} for x in views]))["loss"]
    assert set(views[0]) == {"global_0", "global_1", "local_0", "local_1"}
    assert math.isfinite(loss.item())


def test_vit_needs_every_crop_at_its_img_size():
    vit = {"backbone": "vit_tiny", "backbone_kwargs": {"img_size": 16, **TINY_VIT}, "spatial_dims": 2}
    with pytest.raises(ValueError, match=r"local crops are \(8, 8\).*ResNet"):
        DINO(**HEAD, **CROPS, **vit)
    model = DINO(**HEAD, **(CROPS | {"local_augment": ViewAugment(size=16)}), **vit)
    batch = _batch() | {f"local_{i}": torch.rand(3, 1, 16, 16) for i in range(2)}
    assert math.isfinite(model.compute_loss(batch)["loss"].item())


def _write_images(folder, spatial_dims, count=8):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        if spatial_dims == 2:
            Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / f"img_{i}.png")
        else:
            volume = rng.random((20, 20, 20), dtype=np.float32)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"vol_{i}.nii.gz")
    return folder


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_smoke_run_through_the_cli(tmp_path, spatial_dims):
    source = _write_images(tmp_path / "images", spatial_dims)
    run = tmp_path / "run"
    recipe = recipes_dir() / "smoke" / f"dino_{spatial_dims}d.yaml"
    args = ["pretrain", "--config", str(recipe), "--data.source", str(source)]
    assert main([*args, "--trainer.default_root_dir", str(run)]) == 0
    assert (run / "weights" / "backbone.safetensors").is_file()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    assert torch.count_nonzero(state["criterion.center"]) > 0  # the centre is part of the checkpoint
