"""Exporting pretrained weights (safetensors + metadata, TorchScript, ONNX, MONAI bundle) and loading them."""

from medssl.export.backbone import write_weights
from medssl.export.exporter import FORMATS, export
from medssl.export.files import ExportError
from medssl.export.load import LoadReport, adapt_channels, load_pretrained
from medssl.export.source import Pretrained, open_pretrained

__all__ = [
    "FORMATS",
    "ExportError",
    "LoadReport",
    "Pretrained",
    "adapt_channels",
    "export",
    "load_pretrained",
    "open_pretrained",
    "write_weights",
]
