"""``load_pretrained``: the plain MONAI network with pretrained weights, plus a report of what was loaded.

Adaptations are explicit: a different number of input channels needs ``channel_adapt``, a different ViT
input size needs ``img_size``; without them a mismatch raises instead of silently re-initialising weights.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.export.files import ExportError
from medssl.export.source import open_pretrained

ChannelAdapt = Literal["repeat", "average"]
POS_EMBED = "patch_embedding.position_embeddings"


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: keys loaded, missing (left at their fresh init), unexpected, adapted."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adaptations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.missing:
            lines.append(f"missing (fresh init) {len(self.missing)}: {_few(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected {len(self.unexpected)}: {_few(self.unexpected)}")
        lines += [f"adapted: {a}" for a in self.adaptations]
        return "\n".join(lines)


def _few(keys: list[str], shown: int = 8) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def load_pretrained(
    path: str | Path,
    *,
    in_channels: int | None = None,
    channel_adapt: ChannelAdapt | None = None,
    img_size: int | Sequence[int] | None = None,
    strict: bool = True,
) -> tuple[nn.Module, LoadReport]:
    """Build the plain MONAI network of an export dir, run dir or checkpoint and load its weights.

    Args:
        path: export folder (``medssl.json``), run folder (``checkpoints/last.ckpt``) or checkpoint file.
        in_channels: input channels of the returned network (default: as pretrained).
        channel_adapt: how the stem weights meet a different ``in_channels``: ``"repeat"`` cycles the
            pretrained channel weights, ``"average"`` gives every channel their mean; both are scaled so that
            an image repeated over the channels gives the pretrained response.
        img_size: ViT only: a new input size; the position embeddings are interpolated on the patch grid.
        strict: raise on unexpected keys or on missing keys other than a decoder that was not pretrained.

    Returns the network in eval mode and a ``LoadReport``.
    """
    pretrained = open_pretrained(path)
    meta = pretrained.meta
    encoder, decoder, untrained = pretrained.split_state()
    state = {**encoder, **decoder}
    kwargs = _target_kwargs(meta, in_channels, img_size)
    net = _plain_class(meta["monai_class"])(**kwargs)
    report = LoadReport(source=str(path))
    target = net.state_dict()
    state = _adapt(state, target, meta, kwargs, channel_adapt, report)
    result = net.load_state_dict(state, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    report.loaded = [k for k in state if k in target]
    bad_missing = [k for k in report.missing if k not in untrained]
    if strict and (bad_missing or report.unexpected):
        raise ExportError(f"{path}: weights do not match {meta['monai_class']}:\n{report}")
    return net.eval(), report


def _plain_class(path: str) -> type[nn.Module]:
    if not path.startswith("monai.networks.nets."):
        raise ExportError(f"monai_class {path!r}: only monai.networks.nets classes are built")
    module, name = path.rsplit(".", 1)
    cls: type[nn.Module] = getattr(importlib.import_module(module), name)
    return cls


def _target_kwargs(meta: dict[str, Any], in_channels: int | None, img_size: Any) -> dict[str, Any]:
    kwargs = dict(meta["monai_kwargs"])
    channel_key = "n_input_channels" if "n_input_channels" in kwargs else "in_channels"
    if in_channels is not None:
        kwargs[channel_key] = in_channels
    if img_size is not None:
        if "img_size" not in kwargs:
            raise ExportError(f"img_size applies to ViT backbones only; {meta['backbone']!r} takes any size")
        dims = meta["spatial_dims"]
        size = [int(img_size)] * dims if isinstance(img_size, int) else [int(s) for s in img_size]
        patch = kwargs["patch_size"]
        if len(size) != dims or any(s % p for s, p in zip(size, patch, strict=True)):
            raise ExportError(f"img_size {img_size!r} must be {dims} sizes divisible by patch_size {patch}")
        kwargs["img_size"] = size
    return kwargs


def _adapt(
    state: dict[str, Tensor],
    target: dict[str, Tensor],
    meta: dict[str, Any],
    kwargs: dict[str, Any],
    channel_adapt: ChannelAdapt | None,
    report: LoadReport,
) -> dict[str, Tensor]:
    """Reshape the stem conv and the position embeddings where asked; any other shape mismatch raises."""
    old_c: int = meta["in_channels"]
    new_c: int = kwargs["n_input_channels"] if "n_input_channels" in kwargs else kwargs["in_channels"]
    if new_c != old_c and channel_adapt is None:
        raise ExportError(
            f"the weights were pretrained with in_channels={old_c}, asked for {new_c}: pass "
            "channel_adapt='repeat' or 'average' to adapt the stem weights"
        )
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key == POS_EMBED and kwargs.get("img_size") != meta["monai_kwargs"].get("img_size"):
            if kwargs.get("pos_embed_type", "learnable") != "learnable":
                out[key] = want  # fixed sin-cos embeddings: the new network's own are right
                report.adaptations.append(f"{key}: sin-cos recomputed for img_size {kwargs['img_size']}")
                continue
            out[key] = _interpolate_pos_embed(value, meta["monai_kwargs"], kwargs)
            report.adaptations.append(f"{key}: interpolated {tuple(value.shape)} -> {tuple(want.shape)}")
        elif _is_stem(value, want, meta["spatial_dims"], old_c, new_c) and channel_adapt is not None:
            out[key] = adapt_channels(value, new_c, channel_adapt)
            report.adaptations.append(f"{key}: {channel_adapt} {old_c} -> {new_c} input channels")
        else:
            raise ExportError(
                f"{key}: pretrained shape {tuple(value.shape)} does not fit {tuple(want.shape)}; "
                "only the stem (in_channels + channel_adapt) and ViT position embeddings (img_size) adapt"
            )
    return out


def _is_stem(value: Tensor, want: Tensor, dims: int, old_c: int, new_c: int) -> bool:
    same_rest = value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]
    return value.ndim == dims + 2 and same_rest and value.shape[1] == old_c and want.shape[1] == new_c


def adapt_channels(weight: Tensor, channels: int, mode: ChannelAdapt) -> Tensor:
    """Stem conv weights ``(O, C, *k)`` for ``channels`` inputs; the sum over input channels is kept.

    ``repeat``: channel ``j`` takes pretrained channel ``j % C``, divided by how often that one is used
    (needs ``channels >= C``). ``average``: every channel takes the sum of the pretrained ones / ``channels``.
    """
    old = weight.shape[1]
    if mode == "average":
        mean = weight.sum(dim=1, keepdim=True) / channels
        return mean.expand(-1, channels, *weight.shape[2:]).clone()
    if mode != "repeat":
        raise ExportError(f"channel_adapt must be 'repeat', 'average' or None, got {mode!r}")
    if channels < old:
        raise ExportError(
            f"channel_adapt='repeat' cannot go from {old} to {channels} channels; use 'average'"
        )
    index = torch.arange(channels) % old
    uses = torch.bincount(index, minlength=old).to(weight.dtype)  # (C,) how often each is repeated
    return weight[:, index] / uses[index].view(1, -1, *[1] * (weight.ndim - 2))


def _interpolate_pos_embed(pos: Tensor, old: dict[str, Any], new: dict[str, Any]) -> Tensor:
    """``(1, L, D)`` learned position embeddings resampled (bi/trilinear) from the old to the new grid."""
    old_grid = [s // p for s, p in zip(old["img_size"], old["patch_size"], strict=True)]
    new_grid = [s // p for s, p in zip(new["img_size"], new["patch_size"], strict=True)]
    if math.prod(old_grid) != pos.shape[1]:
        raise ExportError(f"{POS_EMBED}: {pos.shape[1]} tokens do not match the patch grid {old_grid}")
    dims = len(old_grid)
    grid = pos.transpose(1, 2).reshape(1, pos.shape[2], *old_grid)  # (1, D, *old_grid)
    mode = "bilinear" if dims == 2 else "trilinear"
    resized = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False)  # (1, D, *new_grid)
    return resized.flatten(2).transpose(1, 2).contiguous()  # (1, L', D)
