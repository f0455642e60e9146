"""The notebooks: committed without outputs, and executed end to end (nbclient) on tiny settings."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "medssl-tests"


def test_the_notebooks_are_there() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "views_and_embeddings.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text())
    dirty = [
        index
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A kernel spec for this interpreter under its own name, and the tiny settings, as environment."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": KERNEL, "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "JUPYTER_PATH": str(root),
        "PYTHONPATH": path,  # the kernel imports this checkout (a worktree or a normal install alike)
        "MEDSSL_NOTEBOOK_FAST": "1",
        "MEDSSL_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),  # the demo data, built once
    }


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nbclient", "ipykernel", "nilearn", "matplotlib")),
    reason="needs nbclient, ipykernel, nilearn and matplotlib (the dev extra)",
)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_tiny_settings(
    path: Path, tmp_path: Path, kernel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    for key, value in {**kernel_env, "MEDSSL_NOTEBOOK_DIR": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    nbformat.write(notebook, tmp_path / path.name)  # the executed copy, to look at when a check fails
    (runs,) = (tmp_path / "runs").iterdir()
    if path.stem == "quickstart":
        assert {"backbone.safetensors", "model.ts"} <= {p.name for p in (runs / "export").iterdir()}
        assert (runs / "finetune_pretrained" / "test_metrics.json").is_file()
        assert (runs / "finetune_scratch" / "test_metrics.json").is_file()
    else:
        assert len(list((runs / "views").glob("*/views.png"))) == 5
        assert list((runs / "mae" / "reconstructions").glob("epoch_*.png"))
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= (2 if path.stem == "quickstart" else 7)  # the figures reached the notebook
