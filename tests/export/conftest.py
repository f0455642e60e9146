from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from medssl.methods.simclr import SimCLR
from medssl.transforms.views import ViewAugment
from tests.backbones.test_contract import TINY

#: Spatial shapes of the tiny test inputs; divisible by 16 for the U-Net and by 8 for the ViT patches.
SHAPES: dict[int, tuple[int, ...]] = {2: (32, 32), 3: (16, 32, 32)}


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_simclr(name: str, dims: int, in_channels: int = 1) -> SimCLR:
    """A randomly initialised SimCLR module around the tiny backbone ``name`` (as in the contract test)."""
    torch.manual_seed(0)
    kwargs = TINY[name](SHAPES[dims])
    return SimCLR(
        backbone=name,
        backbone_kwargs=kwargs,
        spatial_dims=dims,
        in_channels=in_channels,
        hidden_dim=8,
        projection_dim=4,
        augment=ViewAugment(size=16),  # the size export checks TorchScript/ONNX at (U-Net: 32)
    ).eval()


def save_checkpoint(module: SimCLR, path: Path) -> Path:
    """The parts of a Lightning checkpoint export reads; hparams keep the ViewAugment dataclass."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "global_step": 1,
            "epoch": 0,
        },
        path,
    )
    return path
