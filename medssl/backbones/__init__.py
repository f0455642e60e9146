"""MONAI networks behind one contract, built by name: ``build_backbone("resnet18", spatial_dims=3, ...)``."""

from medssl.backbones import resnet, unet, vit  # noqa: F401  (registers the builders)
from medssl.backbones.base import Backbone, EncoderDecoder
from medssl.backbones.registry import BACKBONES, build_backbone, list_backbones

__all__ = ["BACKBONES", "Backbone", "EncoderDecoder", "build_backbone", "list_backbones"]
