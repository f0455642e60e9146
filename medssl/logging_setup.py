"""Quiet the third-party log lines that say nothing to a medssl user."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_NOISE = ("litlogger", "LitLogger")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in _NOISE)


def quiet_third_party() -> None:
    """Drop Lightning's advertising tips; keep its device and progress messages."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, Lightning logs warnings and errors only (for loops of many short runs)."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "medssl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(pytorch_lightning|lightning_fabric)\..*")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
