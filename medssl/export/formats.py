"""TorchScript, ONNX and MONAI-bundle exports, each checked against PyTorch right after it is written.

Encoder-only exports compute the backbone's pooled features ``(B, num_features)``; an encoder-decoder whose
decoder was pretrained exports the full plain network. A check that fails removes the file and raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medssl.export.files import ExportError, replace_dir, write_atomic, write_json
from medssl.export.source import Pretrained

TORCHSCRIPT_TOL = 1e-5
ONNX_TOL = 1e-4
ONNX_OPSET = 17
BUNDLE_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


def exported_network(pretrained: Pretrained) -> tuple[nn.Module, str]:
    """The module that TorchScript/ONNX export and the name of its output (``features`` or ``logits``)."""
    backbone = pretrained.backbone
    if pretrained.decoder_pretrained:
        return plain_network(pretrained), "logits"
    return backbone.eval(), "features"  # Backbone.forward == pool: (B, num_features)


def plain_network(pretrained: Pretrained) -> nn.Module:
    """The plain MONAI network holding the backbone's weights (decoder included), in eval mode."""
    net = pretrained.backbone.plain_network()
    net.load_state_dict(pretrained.backbone.state_dict(), strict=True)
    return net.eval()


def example_input(pretrained: Pretrained, batch: int = 2, seed: int = 0) -> Tensor:
    """A random ``(batch, C, *size)`` input of the pretraining size (ViT ``img_size``, else the view size)."""
    meta = pretrained.meta
    dims = meta["spatial_dims"]
    size = meta.get("input_size") or meta.get("view_size") or 32
    sizes = [int(size)] * dims if isinstance(size, int) else [int(s) for s in size]
    if meta["is_encoder_decoder"]:
        sizes = [max(32, -(-s // 16) * 16) for s in sizes]  # 4 halvings, > 1 voxel left for instance norm
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, meta["in_channels"], *sizes, generator=generator)


def export_torchscript(pretrained: Pretrained, path: Path) -> float:
    """Trace the network to ``path``; returns the max abs difference to PyTorch on a new batch size."""
    net, _ = exported_network(pretrained)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what C++/Java/mobile runtimes load.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example_input(pretrained), check_trace=False)

    def save(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(traced, tmp)

    def run(tmp: str) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(tmp, map_location="cpu")(example_input(pretrained, batch=3, seed=1))

    return _write_checked(path, "TorchScript", save, run, net, pretrained, TORCHSCRIPT_TOL)


def export_onnx(pretrained: Pretrained, path: Path) -> float:
    """Export to ONNX (opset 17, dynamic batch and, for CNNs, spatial axes); check it with onnxruntime."""
    import onnxruntime

    net, output = exported_network(pretrained)

    def write(tmp: str) -> None:
        # dynamo=False: the torch.export-based exporter needs onnxscript, which medssl does not require.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example_input(pretrained),),
                tmp,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["image"],
                output_names=[output],
                dynamic_axes=_dynamic_axes(pretrained, output),
            )

    def run(tmp: str) -> Tensor:
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        x = example_input(pretrained, batch=3, seed=1).numpy()
        return torch.from_numpy(session.run(None, {"image": x})[0])

    return _write_checked(path, "ONNX", write, run, net, pretrained, ONNX_TOL)


def _dynamic_axes(pretrained: Pretrained, output: str) -> dict[str, dict[int, str]]:
    """Batch always; spatial axes too, except for ViTs (their position embeddings fix the input size)."""
    dims = pretrained.meta["spatial_dims"]
    spatial = {} if pretrained.meta.get("input_size") else {2 + i: f"size_{i}" for i in range(dims)}
    outputs = {0: "batch", **(spatial if output == "logits" else {})}
    return {"image": {0: "batch", **spatial}, output: outputs}


def _write_checked(
    path: Path,
    name: str,
    write: Callable[[str], None],
    run: Callable[[str], Tensor],
    net: nn.Module,
    pretrained: Pretrained,
    tol: float,
) -> float:
    """Write to a temp file, run it, compare with ``net``; only a file that passes is renamed to ``path``."""
    diffs: list[float] = []

    def write_and_check(tmp: str) -> None:
        write(tmp)
        with torch.no_grad():
            expected = net(example_input(pretrained, batch=3, seed=1))
            got = run(tmp)
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
        if not diff <= tol:
            raise ExportError(
                f"{name} export of {pretrained.meta['backbone']} failed its check: outputs differ from "
                f"PyTorch by {diff:.3g} (> {tol:g}); nothing was written to {path.name}"
            )
        diffs.append(diff)

    write_atomic(path, write_and_check)
    return diffs[0]


def export_bundle(pretrained: Pretrained, folder: Path) -> Path:
    """Write a MONAI-bundle-shaped folder, then parse it with ``monai.bundle`` and check the weights load."""
    net = plain_network(pretrained)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}

    def build(tmp: Path) -> None:
        write_json(tmp / "configs" / "metadata.json", bundle_metadata(pretrained))
        write_json(tmp / "configs" / "inference.json", bundle_inference(pretrained))
        write_atomic(tmp / "models" / "model.pt", lambda p: torch.save(state, p))
        check_bundle(tmp)

    return replace_dir(folder, build)


def check_bundle(folder: Path) -> nn.Module:
    """Parse ``configs/inference.json``, instantiate ``network_def``, load ``models/model.pt`` strictly."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    state = torch.load(folder / "models" / "model.pt", map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(
            f"bundle check failed: models/model.pt does not load into network_def: {err}"
        ) from None
    return net


def bundle_inference(pretrained: Pretrained) -> dict[str, Any]:
    meta = pretrained.meta
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": meta["monai_class"], **meta["monai_kwargs"]},
        "network": "$@network_def.to(@device)",
        "model_path": "$@bundle_root + '/models/model.pt'",
    }


def bundle_metadata(pretrained: Pretrained) -> dict[str, Any]:
    meta = pretrained.meta
    versions = meta["versions"]
    full = pretrained.decoder_pretrained
    sizes = example_input(pretrained, batch=1).shape[2:]
    return {
        "schema": BUNDLE_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medssl {versions['medssl']}"},
        "monai_version": versions.get("monai"),
        "pytorch_version": versions.get("torch"),
        "numpy_version": versions.get("numpy"),
        "required_packages_version": {"safetensors": versions.get("safetensors")},
        "name": f"medssl {meta['method']} {meta['backbone']} {meta['spatial_dims']}D",
        "task": f"self-supervised pretrained {'encoder-decoder' if full else 'encoder'} ({meta['method']})",
        "description": f"{meta['backbone']} pretrained with {meta['method']} on {meta['data']['dataset']}; "
        "weights for fine-tuning, not a task model",
        "authors": "medssl",
        "copyright": "see the training data's licence",
        "data_source": meta["data"]["dataset"],
        "intended_use": "initialisation for fine-tuning",
        "network_data_format": {
            "inputs": {"image": _tensor_format("image", meta["in_channels"], list(sizes))},
            "outputs": {"pred": _tensor_format("segmentation" if full else "features", None, [])},
        },
    }


def _tensor_format(kind: str, channels: int | None, spatial: list[int]) -> dict[str, Any]:
    return {
        "type": "image" if kind == "image" else "tensor",
        "format": {"image": "magnitude", "segmentation": "segmentation", "features": "embedding"}[kind],
        "num_channels": channels,
        "spatial_shape": spatial,
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": False,
        "channel_def": {},
    }
