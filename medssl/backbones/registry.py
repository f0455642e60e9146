"""The backbone registry and its one entry point, ``build_backbone``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from medssl.backbones.base import Backbone
from medssl.registry import Registry

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")

_COMMON = ("spatial_dims", "in_channels")


def list_backbones() -> list[str]:
    """Sorted names of every registered backbone."""
    return BACKBONES.names()


def build_backbone(name: str, *, spatial_dims: int, in_channels: int, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name``; ``kwargs`` are that builder's own keyword-only options.

    Unknown or missing options raise ``TypeError`` naming the backbone and listing its valid options.
    """
    builder = BACKBONES.get(name)
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"backbone {name!r}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"backbone {name!r}: in_channels must be a positive int, got {in_channels!r}")

    params = inspect.signature(builder).parameters
    options = [p for p in params if p not in _COMMON]
    valid = ", ".join(options) or "(none)"
    unknown = [k for k in kwargs if k not in options]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"backbone {name!r} got unknown option(s) {', '.join(hints)}; valid options: {valid}")
    missing = [p for p in options if params[p].default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise TypeError(f"backbone {name!r} needs option(s) {', '.join(missing)}; valid options: {valid}")
    return builder(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
