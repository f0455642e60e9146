"""``throughput_table.py --update`` replaces one recipe's row and keeps the others with their own load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import medssl

BENCHMARKS = Path(medssl.__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports bench_utils from beside it
spec = importlib.util.spec_from_file_location("throughput_table", BENCHMARKS / "throughput_table.py")
assert spec is not None and spec.loader is not None
throughput_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(throughput_table)


def cell(speed: float, view: list[int]) -> dict:
    return {
        "method": "JCL", "backbone": "unet", "spatial_dims": 3, "view": [1, *view], "batch_size": 8,
        "parameters": 1.5e6, "images_per_second": speed, "peak_rss_mib": 2000.0, "idle_rss_mib": 1000.0,
    }  # fmt: skip


def table(recipes: dict[str, dict], load: float, command: str) -> dict:
    env = {"cpu": "cpu", "torch": "2", "threads": 2, "cores": 2, "load_average": [load] * 3}
    return {
        "environment": env | {"load_average_after": [load] * 3},
        "command": command,
        "recipes": list(recipes),
        "precisions": ["32-true"],
        "steps": 3,
        "cells": {name: {"32-true": c} for name, c in recipes.items()},
    }


def test_update_replaces_only_the_remeasured_row_and_says_when_it_was_measured():
    earlier = table({"a": cell(10.0, [32, 64, 32]), "b": cell(5.0, [32, 32, 32])}, 0.5, "python t.py")
    later = table({"a": cell(2.0, [64, 96, 64])}, 1.5, "python t.py --recipes a --update")
    merged = throughput_table.update_rows(earlier, later)
    assert merged["recipes"] == ["a", "b"]
    assert merged["cells"]["a"]["32-true"]["images_per_second"] == 2.0
    assert merged["cells"]["b"] == earlier["cells"]["b"]
    assert merged["environment"] == earlier["environment"]
    text = throughput_table.markdown(merged)
    assert "| 64x96x64 |" in text and "| 32x64x32 |" not in text and "| 32x32x32 |" in text
    assert "`a` remeasured later: `python t.py --recipes a --update`" in text and "1.5/1.5/1.5" in text


def test_update_refuses_a_row_measured_differently():
    earlier = table({"a": cell(10.0, [32, 64, 32])}, 0.5, "python t.py")
    later = table({"a": cell(2.0, [64, 96, 64])}, 1.5, "python t.py") | {"steps": 5}
    with pytest.raises(SystemExit, match="--steps"):
        throughput_table.update_rows(earlier, later)


def test_update_without_a_table_names_the_missing_file(tmp_path):
    with pytest.raises(SystemExit, match=r"no table at .*throughput_table\.json"):
        throughput_table.earlier_table(tmp_path, ["32-true"], 3)
