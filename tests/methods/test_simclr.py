import pytest
import torch
import torch.nn.functional as F

from medssl.methods import METHODS, SimCLR, list_methods
from medssl.transforms.views import ViewAugment


def reference_nt_xent(z0, z1, temperature):
    """NT-Xent as written in the SimCLR paper (eq. 1), averaged over all 2N anchors."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = z0.shape[0]
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, positives)


def test_registered():
    assert "simclr" in list_methods()
    assert METHODS.get("simclr") is SimCLR


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_loss_matches_the_paper_formula(tiny, spatial_dims):
    torch.manual_seed(0)
    model = SimCLR(spatial_dims=spatial_dims, temperature=0.3, hidden_dim=16, projection_dim=8, **tiny).eval()
    shape = (3, 1) + (12,) * spatial_dims
    batch = {"view_0": torch.rand(shape), "view_1": torch.rand(shape)}
    loss = model.compute_loss(batch)["loss"]
    with torch.no_grad():
        z = model.projection_head(model.backbone(torch.cat([batch["view_0"], batch["view_1"]])))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference_nt_xent(*z.chunk(2), 0.3).item(), rel=1e-5)


def test_identical_views_give_a_lower_loss_than_unrelated_ones(tiny):
    torch.manual_seed(0)
    model = SimCLR(spatial_dims=2, **tiny).eval()
    x = torch.rand(8, 1, 16, 16)
    same = model.compute_loss({"view_0": x, "view_1": x})["loss"]
    other = model.compute_loss({"view_0": x, "view_1": torch.rand_like(x)})["loss"]
    assert same < other


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_trainable_parameter_gets_a_gradient(tiny, spatial_dims):
    model = SimCLR(spatial_dims=spatial_dims, hidden_dim=16, projection_dim=8, **tiny)
    shape = (4, 1) + (12,) * spatial_dims
    model.compute_loss({"view_0": torch.rand(shape), "view_1": torch.rand(shape)})["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_view_transform_gives_two_views_of_the_augment_size(tiny):
    model = SimCLR(spatial_dims=3, augment=ViewAugment(size=(8, 10, 6)), **tiny)
    out = model.view_transform()({"image": torch.rand(1, 16, 16, 16)})
    assert out["view_0"].shape == out["view_1"].shape == (1, 8, 10, 6)
