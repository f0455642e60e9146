"""Every speed / memory benchmark runs end to end in its ``--quick`` form and writes its results.

The real measurements take minutes on a quiet machine and are not part of the test suite; these only show
that each script still runs (tiny sizes, one round) and writes its JSON and Markdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import medssl
from medssl.data.paths import data_dir

ROOT = Path(medssl.__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
REAL_DATA = pytest.mark.skipif(
    not (data_dir() / "pneumoniamnist").is_dir(), reason=f"real data not found at {data_dir()}"
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "script, keys",
    [
        ("framework_overhead", {"simclr_resnet18", "mae_vit_tiny"}),
        ("mixed_precision", {"simclr_resnet18", "simclr_resnet18_channels_last", "mae_vit_tiny"}),
        ("checkpointing_memory", {"mae"}),
        ("precision_profile", {"ceiling", "dispatch", "simclr_resnet18", "mae_vit_tiny"}),
        pytest.param("data_pipeline", {"simclr_resnet18_pneumoniamnist_2d"}, marks=REAL_DATA),
        pytest.param("throughput_table", {"cells"}, marks=REAL_DATA),
    ],
)
def test_benchmark_runs_quick_and_writes_its_results(script, keys, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / f"{script}.json").read_text())
    assert keys <= result.keys()
    assert (tmp_path / f"{script}.md").read_text().startswith("# ")
    assert result["environment"]["load_average"]
