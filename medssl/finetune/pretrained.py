"""Load pretrained weights into a fine-tuning backbone, refusing any silent mismatch.

Sources: a pretraining run folder (its ``weights/`` export, else ``checkpoints/last.ckpt``), a Lightning
checkpoint (read with ``torch.load(weights_only=True)`` only; keys ``backbone.*``), or an export folder
(``backbone.safetensors`` + ``medssl.json`` [+ ``decoder.safetensors``]). Reading is shared with
``medssl export`` (``medssl.export.open_pretrained``); this module only checks and copies into a backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from medssl.backbones import Backbone
from medssl.export import ExportError, LoadReport, open_pretrained

SCRATCH = "none"


class PretrainedWeightsError(ValueError):
    """Pretrained weights that cannot be read, or that do not fit the fine-tuning backbone."""


def is_scratch(source: str | Path | None) -> bool:
    """True for ``None`` or ``"none"`` (any case): train from scratch."""
    return source is None or str(source).strip().lower() in ("", SCRATCH)


def load_backbone_weights(backbone: Backbone, source: str | Path | None) -> LoadReport:
    """Copy the pretrained weights at ``source`` into ``backbone`` (and its decoder when one was pretrained).

    Raises ``PretrainedWeightsError`` naming what differs (backbone name, ``spatial_dims``,
    ``in_channels``, a tensor's shape, or keys one side lacks) instead of leaving weights at their init.
    Only decoder blocks of an encoder-decoder backbone that the pretraining did not train stay at their
    fresh init (listed as missing).
    """
    if is_scratch(source):
        return LoadReport(source=SCRATCH)
    assert source is not None
    path = _resolve(Path(source).expanduser())
    try:
        pretrained = open_pretrained(path)
    except ExportError as err:
        raise PretrainedWeightsError(str(err)) from None
    _check_spec(pretrained.meta, backbone, path)
    encoder, decoder, untrained = pretrained.split_state()
    state = {**encoder, **decoder}
    target = backbone.state_dict()
    _check_tensors(state, target, set(untrained), backbone, pretrained.meta, path)
    backbone.load_state_dict(state, strict=False)
    return LoadReport(
        source=str(path),
        loaded=sorted(state),
        missing=sorted(set(target) - set(state)),
        unexpected=[],
    )


def pretrained_parameter_names(report: LoadReport) -> set[str]:
    """Module-level names (``backbone.*``) of the tensors ``report`` loaded: the only ones that
    ``backbone_lr_scale`` slows down (head, untrained decoder blocks, scratch backbones: ``lr``)."""
    return {f"backbone.{key}" for key in report.loaded}


def summary(report: LoadReport) -> str:
    """One line for the log: where from, how many tensors loaded / missing / unexpected."""
    if report.source == SCRATCH:
        return "pretrained: none, the backbone is trained from scratch"
    line = f"pretrained: {report.source}: loaded {len(report.loaded)} tensors"
    line += f", missing {len(report.missing)}" + (f" ({_short(report.missing)})" if report.missing else "")
    return line + f", unexpected {len(report.unexpected)}"


def _resolve(path: Path) -> Path:
    """A run folder whose fit ended holds ``weights/``: read that export, else leave ``path`` as given."""
    weights = path / "weights"
    return weights if (weights / "medssl.json").is_file() else path


def _check_spec(meta: dict[str, Any], backbone: Backbone, path: Path) -> None:
    wanted = {
        "backbone": backbone.name,
        "spatial_dims": backbone.spatial_dims,
        "in_channels": backbone.in_channels,
    }
    differ = [
        f"{key}: pretrained {meta.get(key)!r}, here {value!r}"
        for key, value in wanted.items()
        if meta.get(key) != value
    ]
    if differ:
        raise PretrainedWeightsError(
            f"{path}: the pretrained backbone does not match the fine-tuning one ({'; '.join(differ)}); "
            "fine-tune with the pretraining's backbone settings or pass --model.pretrained none"
        )


def _check_tensors(
    state: dict[str, Tensor],
    target: dict[str, Tensor],
    untrained: set[str],
    backbone: Backbone,
    meta: dict[str, Any],
    path: Path,
) -> None:
    shapes = [
        f"{k}: pretrained {tuple(v.shape)}, here {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    missing = [k for k in target if k not in state and k not in untrained]
    unexpected = [k for k in state if k not in target]
    problems = [f"shape {s}" for s in shapes]
    problems += [f"not in the pretrained weights: {_short(missing)}"] if missing else []
    problems += [f"not in the fine-tuning backbone: {_short(unexpected)}"] if unexpected else []
    if problems:
        raise PretrainedWeightsError(
            f"{path}: the weights do not fit backbone {backbone.name!r}{_kwargs_hint(meta, backbone)}:\n  "
            + "\n  ".join(problems[:8])
            + (f"\n  (+{len(problems) - 8} more)" if len(problems) > 8 else "")
        )


def _kwargs_hint(meta: dict[str, Any], backbone: Backbone) -> str:
    """`` (differing settings: widen_factor ...)`` from the two MONAI constructor specs, when they differ."""
    pretrained, here = meta.get("monai_kwargs") or {}, backbone.monai_spec()[1]
    keys = sorted(k for k in {*pretrained, *here} if pretrained.get(k) != here.get(k))
    diffs = [f"{k} pretrained {pretrained.get(k)!r} vs here {here.get(k)!r}" for k in keys]
    return f" (differing settings: {'; '.join(diffs)})" if diffs else ""


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
