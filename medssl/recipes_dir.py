"""Locate the recipe folder: the source checkout's ``recipes/`` or the installed ``medssl.recipes``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def recipes_dir() -> Path:
    """Folder holding ``base/``, ``pretrain/``, ``smoke/`` and ``demo/`` recipes."""
    checkout = Path(__file__).resolve().parents[1] / "recipes"
    if (checkout / "base").is_dir():
        return checkout
    return Path(str(resources.files("medssl.recipes")))
