"""Exporting pretrained weights."""

from medssl.export.backbone import save_backbone

__all__ = ["save_backbone"]
