"""Suite-wide settings."""

import os

import torch


def pytest_configure(config) -> None:
    """Each pytest-xdist worker, and what it starts, computes on one thread: the workers share the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # the medssl processes, notebook kernels and benchmarks it runs
