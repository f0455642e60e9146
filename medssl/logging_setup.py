"""Quiet the third-party log lines that say nothing to a medssl user."""

from __future__ import annotations

import logging

_NOISE = ("litlogger", "LitLogger")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in _NOISE)


def quiet_third_party() -> None:
    """Drop Lightning's advertising tips; keep its device and progress messages."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())
