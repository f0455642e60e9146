"""Where pretrained weights come from: a training module, a Lightning checkpoint, a run dir or an export dir.

Lightning checkpoints are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, so
a checkpoint crafted to run code on load is refused. Export dirs hold safetensors, which cannot hold code.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from medssl.backbones import Backbone, build_backbone
from medssl.export.files import ExportError
from medssl.export.metadata import (
    FORMAT,
    data_settings,
    file_sha256,
    library_versions,
    manifest_sha256,
    view_size,
)

PREFIX = "backbone."


@dataclass
class Pretrained:
    """A backbone with its pretrained weights loaded, the metadata describing it, and its pretrained decoder.

    ``decoder_modules`` names the backbone's child modules that hold *pretrained* decoder weights (e.g.
    ``["upcat_4", "upcat_3"]`` when a method trains the two coarsest blocks); empty for encoder-only ones.
    """

    backbone: Backbone
    meta: dict[str, Any]
    decoder_modules: list[str] = field(default_factory=list)

    @property
    def decoder_pretrained(self) -> bool:
        return bool(self.decoder_modules)

    def split_state(self) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """``(encoder, pretrained decoder, untrained decoder)`` state dicts, CPU and contiguous."""
        all_decoder = decoder_children(self.backbone)
        state = {k: v.detach().cpu().contiguous() for k, v in self.backbone.state_dict().items()}
        parts: tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]] = ({}, {}, {})
        for key, value in state.items():
            child = key.split(".")[0]
            part = 1 if child in self.decoder_modules else 2 if child in all_decoder else 0
            parts[part][key] = value
        return parts


def decoder_children(backbone: nn.Module) -> list[str]:
    """Child modules of an encoder-decoder backbone registered from its first decoder block onwards."""
    if not getattr(backbone, "is_encoder_decoder", False):
        return []
    blocks = list(getattr(backbone, "decoder_blocks"))  # noqa: B009  (a property of EncoderDecoder)
    names = [name for name, _ in backbone.named_children()]
    first = min(names.index(n) for n, m in backbone.named_children() if any(m is b for b in blocks))
    return names[first:]


def pretrained_decoder(backbone: Backbone, blocks: int | None) -> list[str]:
    """Names of the first ``blocks`` decoder blocks (coarse to fine); ``None`` means the whole decoder."""
    if not backbone.is_encoder_decoder:
        if blocks:
            raise ExportError(f"backbone {backbone.name!r} has no decoder to export")
        return []
    if blocks is None:
        return decoder_children(backbone)
    decoder_blocks = list(getattr(backbone, "decoder_blocks"))  # noqa: B009
    names = {id(m): n for n, m in backbone.named_children()}
    return [names[id(b)] for b in decoder_blocks[:blocks]]


def describe(
    backbone: Backbone,
    hparams: Mapping[str, Any],
    *,
    method: str,
    data: Mapping[str, Any],
    recipe_sha256: str,
    data_manifest_sha256: str,
    global_step: int | None,
    epoch: int | None,
) -> dict[str, Any]:
    """The ``medssl.json`` content (without ``files``) for a backbone trained with ``hparams``."""
    monai_class, monai_kwargs = backbone.monai_spec()
    kwargs = json.loads(json.dumps(hparams.get("backbone_kwargs") or {}))
    return {
        "format": FORMAT,
        "method": method,
        "backbone": backbone.name,
        "backbone_kwargs": kwargs,
        "monai_class": monai_class,
        "monai_kwargs": monai_kwargs,
        "spatial_dims": backbone.spatial_dims,
        "in_channels": backbone.in_channels,
        "num_features": backbone.num_features,
        "is_encoder_decoder": backbone.is_encoder_decoder,
        "view_size": view_size(hparams),
        "input_size": list(getattr(backbone, "img_size", ())) or None,
        "data": data_settings(data),
        "recipe_sha256": recipe_sha256,
        "data_manifest_sha256": data_manifest_sha256,
        "global_step": global_step,
        "epoch": epoch,
        "versions": library_versions(),
    }


def method_name(class_path: str | None) -> str:
    """``medssl.methods.simclr.SimCLR`` -> ``simclr``."""
    return class_path.rsplit(".", 1)[-1].lower() if class_path else "unknown"


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; anything that would need code to unpickle raises ``ExportError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), str(err))
        raise ExportError(
            f"{path}: refused to load: the file holds pickled objects other than tensors and plain "
            f"containers, and unpickling them could run code ({reason}). medssl reads checkpoints with "
            "torch.load(weights_only=True) only; re-export it from a trusted environment."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ExportError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


def resolve(path: str | Path) -> tuple[str, Path]:
    """``("export" | "run" | "checkpoint", path)`` for what ``path`` points at; raises if it is none."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "medssl.json").is_file():
        return "export", p
    if p.is_dir() and (p / "checkpoints" / "last.ckpt").is_file():
        return "run", p
    if p.is_file():
        return "checkpoint", p
    raise ExportError(
        f"{path}: expected an export folder (with medssl.json), a run folder (with checkpoints/last.ckpt) "
        "or a checkpoint file"
    )


def open_pretrained(path: str | Path, *, decoder: bool | None = None) -> Pretrained:
    """Load the pretrained backbone from an export dir, a run dir or a Lightning checkpoint."""
    kind, p = resolve(path)
    if kind == "export":
        return _from_export_dir(p)
    ckpt = p / "checkpoints" / "last.ckpt" if kind == "run" else p
    return _from_checkpoint(ckpt, decoder)


def _from_checkpoint(ckpt_path: Path, decoder: bool | None) -> Pretrained:
    ckpt = safe_torch_load(ckpt_path)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ExportError(
            f"{ckpt_path}: not a medssl checkpoint (no state_dict or hyper_parameters.backbone)"
        )
    backbone = _build(hparams, ckpt_path)
    state = {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    _load_strict(backbone, state, ckpt_path)
    run_dir = ckpt_path.parent.parent
    config = _read_yaml(run_dir / "config.yaml")
    model = config.get("model")
    class_path = hparams.get("_class_path") or (model.get("class_path") if isinstance(model, dict) else None)
    fit_end = _read_json(run_dir / "weights" / "medssl.json")  # what SaveBackbone knew at the end of fitting
    meta = describe(
        backbone,
        hparams,
        method=method_name(class_path),
        data=config.get("data") or {},
        recipe_sha256=file_sha256(run_dir / "config.yaml"),
        data_manifest_sha256=str(fit_end.get("data_manifest_sha256", "unknown")),
        global_step=ckpt.get("global_step"),
        epoch=ckpt.get("epoch"),
    )
    if decoder is not None:
        modules = pretrained_decoder(backbone, None if decoder else 0)
    elif "decoder_modules" in fit_end.get("files", {}):
        modules = list(fit_end["files"]["decoder_modules"])
    else:
        record = ckpt.get("medssl") or {}
        modules = pretrained_decoder(backbone, int(record.get("pretrained_decoder_blocks", 0)))
    return Pretrained(backbone.eval(), meta, modules)


def _from_export_dir(folder: Path) -> Pretrained:
    meta = json.loads((folder / "medssl.json").read_text())
    files = meta.get("files") or {}
    backbone = _build(meta, folder / "medssl.json")
    state = dict(backbone.state_dict())  # decoder blocks that were not pretrained keep their fresh init
    state.update(load_file(folder / files.get("encoder", "backbone.safetensors")))
    if files.get("decoder"):
        state.update(load_file(folder / files["decoder"]))
    _load_strict(backbone, state, folder)
    meta = {k: v for k, v in meta.items() if k not in ("files", "exports")}
    return Pretrained(backbone.eval(), meta, list(files.get("decoder_modules") or []))


def _build(spec: Mapping[str, Any], where: Path) -> Backbone:
    try:
        return build_backbone(
            spec["backbone"],
            spatial_dims=spec["spatial_dims"],
            in_channels=spec["in_channels"],
            **(spec.get("backbone_kwargs") or {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{where}: cannot rebuild the backbone: {err}") from None


def _load_strict(backbone: Backbone, state: Mapping[str, Tensor], where: Path) -> None:
    if not state:
        raise ExportError(f"{where}: no backbone weights (no '{PREFIX}*' keys in the state_dict)")
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(f"{where}: the weights do not fit backbone {backbone.name!r}: {err}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def from_module(
    module: nn.Module,
    *,
    data: Mapping[str, Any],
    images: Iterable[Any] | None,
    recipe_sha256: str,
    global_step: int | None,
    epoch: int | None,
) -> Pretrained:
    """Describe a live SSL module (``.backbone`` + ``.hparams``) at the end of fitting."""
    backbone = module.backbone
    if not isinstance(backbone, Backbone):
        raise ExportError(f"{type(module).__name__}.backbone is not a medssl Backbone")
    cls = type(module)
    meta = describe(
        backbone,
        dict(getattr(module, "hparams", {})),
        method=method_name(cls.__name__),
        data=data,
        recipe_sha256=recipe_sha256,
        data_manifest_sha256=manifest_sha256(images) if images is not None else "unknown",
        global_step=global_step,
        epoch=epoch,
    )
    blocks = int(getattr(module, "pretrained_decoder_blocks", 0))
    return Pretrained(backbone, meta, pretrained_decoder(backbone, blocks))
