"""The README's methods x backbones x 2D/3D table: each pairing it lists trains a step; others refuse."""

import pytest
import torch
from torch.utils.data import default_collate

from medssl.methods import METHODS
from medssl.transforms.views import ViewAugment

IMAGE = {2: (32, 32), 3: (32, 32, 32)}
JCL_VIEW = {2: (64, 64), 3: (32, 64, 32)}  # JCL's small view must still reach a 2-voxel bottleneck
BACKBONES = {
    "resnet": lambda dims: {"backbone": "resnet10", "backbone_kwargs": {"widen_factor": 0.125}},
    "vit": lambda dims: {
        "backbone": "vit_tiny",
        "backbone_kwargs": {
            "img_size": list(IMAGE[dims]),
            "patch_size": 8,
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "mlp_dim": 32,
        },
    },
    "unet": lambda dims: {"backbone": "unet", "backbone_kwargs": {"features": [4, 4, 8, 8, 16, 4]}},
}
HEADS = {"hidden_dim": 16, "projection_dim": 8}
METHOD_OPTIONS = {
    "simclr": lambda dims: {**HEADS, "augment": ViewAugment(size=IMAGE[dims])},
    "moco": lambda dims: {**HEADS, "queue_size": 16, "augment": ViewAugment(size=IMAGE[dims])},
    "dino": lambda dims: {
        "hidden_dim": 16,
        "bottleneck_dim": 8,
        "output_dim": 16,
        "global_augment": ViewAugment(size=IMAGE[dims]),
        "local_augment": ViewAugment(size=IMAGE[dims]),
        "num_local": 1,
    },
    "mae": lambda dims: {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    "jcl": lambda dims: {**HEADS, "scale": 0.5, "augment": ViewAugment(size=JCL_VIEW[dims])},
    "mim": lambda dims: {"mask_patch": 8, "augment": ViewAugment(size=IMAGE[dims])},
}
SUPPORTED = {  # what the README's table says
    "simclr": {"resnet", "vit", "unet"},
    "moco": {"resnet", "vit", "unet"},
    "dino": {"resnet", "vit", "unet"},
    "mae": {"vit"},
    "jcl": {"unet"},
    "mim": {"unet"},
}
CASES = [(m, b, d) for m in SUPPORTED for b in BACKBONES for d in (2, 3)]


@pytest.mark.parametrize("method, backbone, dims", CASES)
def test_pairing(method: str, backbone: str, dims: int) -> None:
    torch.manual_seed(0)
    options = {**BACKBONES[backbone](dims), **METHOD_OPTIONS[method](dims)}
    if backbone not in SUPPORTED[method]:
        with pytest.raises(ValueError, match=method.upper() if method != "jcl" else "JCL"):
            METHODS.get(method)(spatial_dims=dims, **options)
        return
    model = METHODS.get(method)(spatial_dims=dims, **options)
    views = model.view_transform()
    batch = default_collate([views({"image": torch.rand(1, *IMAGE[dims])}) for _ in range(2)])
    loss = model.compute_loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
