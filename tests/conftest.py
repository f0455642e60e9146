"""Suite-wide settings."""

import os

import torch


def pytest_configure(config) -> None:
    """Each pytest-xdist worker computes on one thread: the workers already share the machine's cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
