"""Where data lives: ``$MEDSSL_DATA_DIR`` (real datasets) and ``$MEDSSL_CACHE_DIR`` (caches, demo data)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$MEDSSL_DATA_DIR``, else ``../shared/data`` beside the working directory or the source checkout."""
    if os.environ.get("MEDSSL_DATA_DIR"):
        return Path(os.environ["MEDSSL_DATA_DIR"]).expanduser()
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


def cache_dir() -> Path:
    """``$MEDSSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/medssl``, else ``~/.cache/medssl``."""
    if os.environ.get("MEDSSL_CACHE_DIR"):
        return Path(os.environ["MEDSSL_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "medssl"


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """Expand ``~`` and ``$VARS`` in a data path; ``$MEDSSL_DATA_DIR`` defaults as in ``data_dir()``."""
    text = str(source)
    for name in ("MEDSSL_DATA_DIR", "MEDSSL_CACHE_DIR"):
        value = str(data_dir() if name == "MEDSSL_DATA_DIR" else cache_dir())
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    return Path(os.path.expandvars(os.path.expanduser(text)))
