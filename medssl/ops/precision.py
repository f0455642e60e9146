"""Losses in float32 under mixed precision (``trainer.precision: bf16-mixed`` / ``16-mixed``).

Autocast runs matmuls in bf16/fp16, which has 8 (bf16) or 11 (fp16) bits of mantissa: a similarity matrix
divided by a temperature of 0.04-0.2, a softmax over thousands of prototypes or a per-patch variance lose
most of their precision there. The networks stay in mixed precision; only the loss is computed in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
_HALF = (torch.float16, torch.bfloat16)


def in_float32(loss: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``loss(*args, **kwargs)`` with autocast off and every bf16/fp16 tensor (or list of them) in float32.

    float32 and float64 tensors are passed as they are: ``trainer.precision: 64-true`` keeps its losses in
    float64."""
    with torch.autocast(device_type=_device_type([*args, *kwargs.values()]) or "cpu", enabled=False):
        return loss(*map(_float, args), **{k: _float(v) for k, v in kwargs.items()})


def _device_type(values: list[Any]) -> str:
    for value in values:
        if isinstance(value, Tensor):
            return value.device.type
        if isinstance(value, list | tuple) and (found := _device_type(list(value))) != "":
            return found
    return ""


def _float(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.dtype in _HALF else value
    if isinstance(value, list | tuple):
        return type(value)(_float(v) for v in value)
    return value
