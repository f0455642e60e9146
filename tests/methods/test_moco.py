import math
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from PIL import Image

from medssl.cli import main
from medssl.methods.base import METHODS
from medssl.methods.moco import MoCo
from medssl.ops.mochi import in_batch_infonce, mochi_negatives, moco_logits
from medssl.recipes_dir import recipes_dir
from medssl.transforms.views import ViewAugment

SMALL = {"hidden_dim": 16, "projection_dim": 8}


def _model(tiny, spatial_dims=2, **options):
    torch.manual_seed(0)
    return MoCo(spatial_dims=spatial_dims, **{"queue_size": 32, **SMALL, **options}, **tiny)


def _batch(spatial_dims, size=3):
    shape = (size, 1) + (12,) * spatial_dims
    return {"view_0": torch.rand(shape), "view_1": torch.rand(shape)}


def _embeddings(model, batch):
    """Queries and the other view's keys ``(2B, D)``, as the model computes them (eval mode)."""
    views = torch.cat([batch["view_0"], batch["view_1"]])
    with torch.no_grad():
        q = model.projection_head(model.backbone(views))
        if model.prediction_head is not None:
            q = model.prediction_head(q)
        k = model.key_projection_head(model.key_backbone(views)).roll(len(views) // 2, dims=0)
    return F.normalize(q, dim=1), F.normalize(k, dim=1)


def reference_infonce(q, k, queue, temperature):
    """MoCo eq. (1): -log exp(q.k/T) / (exp(q.k/T) + sum_n exp(q.n/T)), averaged, one query at a time."""
    losses = []
    for q_i, k_i in zip(q, k, strict=True):
        positive = torch.exp(q_i @ k_i / temperature)
        negatives = torch.exp(queue @ q_i / temperature).sum()
        losses.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(losses).mean()


def test_registered():
    assert METHODS.get("moco") is MoCo


def test_moco_logits_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    logits = moco_logits(q, k, queue, temperature=0.5)
    assert torch.allclose(logits, torch.tensor([[1.2, 0.0, -2.0]]))
    loss = F.cross_entropy(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(math.exp(1.2) / (math.exp(1.2) + 1 + math.exp(-2))))


def test_moco_logits_match_lightly_memory_bank_loss():
    torch.manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 8), dim=1) for n in (5, 5, 11))
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(11, 8))
    criterion.memory_bank.bank.copy_(queue)
    ours = F.cross_entropy(moco_logits(q, k, queue, 0.2), torch.zeros(5, dtype=torch.long))
    assert ours.item() == pytest.approx(criterion(q, k).item(), rel=1e-6)


def test_mochi_negatives_by_hand():
    """Two hardest of four queue entries, then the documented random draws replayed one query at a time."""
    q = torch.tensor([[1.0, 0.0, 0.0]])
    queue = F.normalize(
        torch.tensor([[0.0, 0.0, 1.0], [0.8, 0.6, 0.0], [-1.0, 0.0, 0.0], [0.6, 0.0, 0.8]]), dim=1
    )
    hard = [queue[1], queue[3]]  # q.n = 0.8 and 0.6, the two hardest
    out = mochi_negatives(
        q, queue, top_k=2, num_mix=3, num_query_mix=2, generator=torch.Generator().manual_seed(1)
    )
    g = torch.Generator().manual_seed(1)
    i, j, a = (
        torch.randint(2, (1, 3), generator=g),
        torch.randint(2, (1, 3), generator=g),
        torch.rand(1, 3, 1, generator=g),
    )
    j2, b = torch.randint(2, (1, 2), generator=g), 0.5 * torch.rand(1, 2, 1, generator=g)
    expected = [a[0, s] * hard[i[0, s]] + (1 - a[0, s]) * hard[j[0, s]] for s in range(3)]
    expected += [b[0, s] * q[0] + (1 - b[0, s]) * hard[j2[0, s]] for s in range(2)]
    expected = [e / e.norm() for e in expected]
    assert out.shape == (1, 5, 3)
    assert torch.allclose(out[0], torch.stack(expected), atol=1e-6)


def test_mochi_query_mixes_are_harder_and_top_one_mixes_are_the_hardest_negative():
    torch.manual_seed(0)
    q, queue = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(20, 8), dim=1)
    out = mochi_negatives(q, queue, top_k=1, num_mix=3, num_query_mix=5)
    hardest = queue[(q @ queue.T).argmax(1)]  # (4, 8)
    assert torch.allclose(out[:, :3], hardest.unsqueeze(1).expand(-1, 3, -1), atol=1e-6)
    sims = torch.einsum("bd,bmd->bm", q, out[:, 3:])
    assert (sims >= (q * hardest).sum(1, keepdim=True) - 1e-6).all()  # closer to q than the hardest
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, 8), atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_v2_loss_is_the_paper_infonce_and_keys_enter_the_queue_after(tiny, spatial_dims):
    model = _model(tiny, spatial_dims, temperature=0.3).eval()
    batch = _batch(spatial_dims)
    queue = model.criterion.memory_bank.bank.clone()
    loss = model.compute_loss(batch)["loss"]
    q, k = _embeddings(model, batch)
    assert loss.item() == pytest.approx(reference_infonce(q, k, queue, 0.3).item(), rel=1e-5)
    assert torch.allclose(model.criterion.memory_bank.bank[:6], k, atol=1e-6)
    assert torch.equal(model.criterion.memory_bank.bank[6:], queue[6:])


@pytest.mark.parametrize(
    "options", [{}, {"mochi": True, "mochi_top_k": 4, "mochi_mix": 2, "mochi_query_mix": 1}]
)
def test_v2_also_logs_the_in_batch_infonce_without_gradient(tiny, options):
    model = _model(tiny, 2, temperature=0.3, **options).eval()
    batch = _batch(2)
    terms = model.compute_loss(batch)
    q, k = _embeddings(model, batch)
    pairs = zip(q.chunk(2), k.chunk(2), strict=True)
    halves = [F.cross_entropy(qh @ kh.T / 0.3, torch.arange(3)) for qh, kh in pairs]
    assert terms["in_batch"].item() == pytest.approx(torch.stack(halves).mean().item(), rel=1e-5)
    assert terms["loss"].requires_grad and not terms["in_batch"].requires_grad


def test_queue_advances_by_both_views_keys_per_step_wraps_and_is_frozen_without_grad(tiny):
    model = _model(tiny, queue_size=10).eval()
    bank = model.criterion.memory_bank
    pointers = []
    for _ in range(3):
        model.compute_loss(_batch(2))  # 2B = 6 keys per step
        pointers.append(int(bank.bank_ptr))
    assert pointers == [6, 0, 6]  # 6 + 6 >= 10: the last 4 slots are filled, then back to the start
    with torch.no_grad():
        model.compute_loss(_batch(2))
    assert int(bank.bank_ptr) == 6


def test_queue_is_saved_and_restored_with_the_state_dict(tiny):
    model = _model(tiny)
    model.compute_loss(_batch(2))
    state = model.state_dict()
    assert {"criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr"} <= set(state)
    restored = _model(tiny)
    restored.load_state_dict(state)
    assert torch.equal(restored.criterion.memory_bank.bank, model.criterion.memory_bank.bank)
    assert int(restored.criterion.memory_bank.bank_ptr) == 6


def test_mochi_without_synthetic_negatives_equals_the_lightly_path_and_mixing_raises_the_loss(tiny):
    plain = _model(tiny).eval()
    batch = _batch(2)
    options = {"mochi": True, "mochi_top_k": 8}
    losses = []
    for mix, query_mix in [(0, 0), (6, 3)]:
        mochi = _model(tiny, mochi_mix=mix, mochi_query_mix=query_mix, **options).eval()
        mochi.load_state_dict(plain.state_dict())
        losses.append(mochi.compute_loss(batch)["loss"].item())
    reference = plain.compute_loss(batch)["loss"].item()
    assert losses[0] == pytest.approx(reference, rel=1e-6)
    assert losses[1] > reference


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_v3_loss_is_in_batch_infonce_over_both_directions(tiny, spatial_dims):
    model = _model(tiny, spatial_dims, version="v3", queue_size=None, temperature=0.5).eval()
    assert model.criterion is None and model.prediction_head is not None
    batch = _batch(spatial_dims, size=4)
    loss = model.compute_loss(batch)["loss"]
    q, k = _embeddings(model, batch)
    expected = (
        sum(
            F.cross_entropy(qh @ kh.T / 0.5, torch.arange(4))
            for qh, kh in zip(q.chunk(2), k.chunk(2), strict=True)
        )
        / 2
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert in_batch_infonce(q, k, 0.5).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"version": "v3", "queue_size": 64}, "no queue"),
        ({"version": "v3", "queue_size": None, "mochi": True}, "needs version='v2'"),
        ({"queue_size": 0}, "queue_size > 0"),
        ({"mochi": True, "mochi_top_k": 0}, "mochi_top_k > 0"),
    ],
)
def test_bad_options_say_what_is_wrong(tiny, options, message):
    with pytest.raises(ValueError, match=message):
        _model(tiny, **options)


@pytest.mark.parametrize("options", [{}, {"version": "v3", "queue_size": None}, {"mochi": True}])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_only_the_query_side_gets_gradients(tiny, spatial_dims, options):
    model = _model(tiny, spatial_dims, **options)
    key_before = [p.clone() for p in model.key_backbone.parameters()]
    model.compute_loss(_batch(spatial_dims, size=4))["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    key_params = [*model.key_backbone.parameters(), *model.key_projection_head.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in key_params)
    assert all(torch.equal(a, b) for a, b in zip(key_before, model.key_backbone.parameters(), strict=True))


def test_key_encoder_follows_the_query_encoder_by_ema_after_an_optimiser_step(tiny, tmp_path):
    model = _model(tiny, momentum_start=0.9, momentum_end=0.9)
    old = [p.clone() for p in [*model.key_backbone.parameters(), *model.key_projection_head.parameters()]]
    loader = torch.utils.data.DataLoader([_batch(2, size=4)], batch_size=None)
    trainer = pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader)
    query = [*model.backbone.parameters(), *model.projection_head.parameters()]
    key = [*model.key_backbone.parameters(), *model.key_projection_head.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(old, key, strict=True))
    for p_old, p_key, p_query in zip(old, key, query, strict=True):
        assert torch.allclose(p_key, 0.9 * p_old + 0.1 * p_query.detach(), atol=1e-6)


def test_momentum_rises_from_start_to_end_by_a_cosine(tiny):
    model = _model(tiny, momentum_start=0.99, momentum_end=1.0)
    assert model.ema_momentum() == 0.99  # no trainer yet
    values = []
    for step in (1, 6, 11):
        model._trainer = SimpleNamespace(global_step=step, estimated_stepping_batches=11)
        values.append(model.ema_momentum())
    model._trainer = None
    assert values == pytest.approx([0.99, 0.995, 1.0])


def test_view_transform_gives_two_views_of_the_augment_size(tiny):
    model = _model(tiny, 3, augment=ViewAugment(size=(8, 10, 6)))
    out = model.view_transform()({"image": torch.rand(1, 16, 16, 16)})
    assert out["view_0"].shape == out["view_1"].shape == (1, 8, 10, 6)


def _write_images(folder, spatial_dims, count=12):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        if spatial_dims == 2:
            Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
        else:
            volume = rng.random((20, 20, 20), dtype=np.float32) * 100
            nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"vol_{i:02d}.nii.gz")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "spatial_dims, extra",
    [(2, []), (3, ["--model.init_args.mochi", "true", "--model.init_args.mochi_top_k", "8"])],
)
def test_smoke_recipe_runs_through_the_cli(tmp_path, spatial_dims, extra):
    source = _write_images(tmp_path / "images", spatial_dims)
    run = tmp_path / "run"
    recipe = recipes_dir() / "smoke" / f"moco_{spatial_dims}d.yaml"
    args = [
        "pretrain",
        "--config",
        str(recipe),
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run),
    ]
    assert main(args + extra) == 0
    assert (run / "weights" / "backbone.safetensors").is_file()
