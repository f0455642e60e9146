"""Every shell command and Python snippet the README shows runs, in README order, so that runs chain.

Commands run in a fresh folder beside ``shared/data`` (a link to the real data, ``MEDSSL_DATA_DIR`` or
``../shared/data``; skipped without it) that holds a link to ``recipes/``, with tiny overrides appended
(two steps, a handful of images); ``medssl`` commands run in this process (``medssl.cli.main``, as the
console script does: one import of torch / MONAI / Lightning instead of one per command), the Python
snippets in a subprocess each. The ones that need hardware this machine lacks are listed in
``ELSEWHERE`` with the test that covers them. A command the README gains that matches no rule fails the
test until a rule is added here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from medssl.cli import main
from medssl.data.paths import data_dir

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

ELSEWHERE = {  # command prefix -> why it does not run here and what covers it instead
    "make demo": "runs `medssl demo`: tests/commands/test_cli.py runs it (--quick) end to end",
    "make test": "is the test suite itself (CI runs it)",
    "docker ": "no Docker engine here: tests/docker lints both Dockerfiles with hadolint",
    "examples/launch/single_gpu.sh": "needs a GPU: tests/commands/test_launch_scripts.py resolves it",
    "GPUS=": "needs GPUs: tests/commands/test_launch_scripts.py resolves the torchrun command",
    "sbatch ": "needs SLURM: tests/commands/test_launch_scripts.py resolves the job's command and resume",
    "python benchmarks/label_efficiency.py": "hours of CPU: chains medssl pretrain and compare, run above",
}
TRAIN = [
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]
TINY = {  # medssl sub-command -> options appended to it
    "pretrain": [*TRAIN, "--data.limit", "16", "--data.batch_size", "4"],
    "finetune": [*TRAIN, "--trainer.limit_test_batches", "1", "--data.limit", "16", "--data.batch_size", "4"],
    "evaluate": ["--data.limit", "32"],
    "compare": [*TRAIN, "--trainer.limit_test_batches", "1", "--data.limit", "16", "--data.batch_size", "4"],
    "export": [],
    "data": ["--max-items", "8"],
}
SHRINK = [  # (pattern, replacement) applied to a command before running it
    (r"--label-fractions( [\d.]+)+", "--label-fractions 1.0"),
    (r"--seeds( \d+)+", "--seeds 0"),
    (r"--probe\.limit \d+", "--probe.limit 16"),
]


def readme_snippets(text: str) -> list[tuple[str, str]]:
    """``("bash", command)`` per shell command (continuations joined, comments dropped) and
    ``("python", block)`` per Python block, in README order."""
    snippets = []
    for language, block in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S):
        if language == "python":
            snippets.append(("python", block))
            continue
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
            if command:
                snippets.append(("bash", command))
    return snippets


def as_argv(command: str) -> list[str] | None:
    """The argv that runs ``command`` here, or None when it is run elsewhere (``ELSEWHERE``)."""
    if any(command.startswith(prefix) for prefix in ELSEWHERE):
        return None
    words = command.split()
    if words[0] != "medssl" or words[1] not in TINY:
        pytest.fail(f"README command with no rule in {__file__}: {command}")
    for pattern, replacement in SHRINK:
        command = re.sub(pattern, replacement, command)
    argv = shlex.split(command)[1:]
    extra = [] if "--print_config" in argv else TINY[words[1]]
    return [*argv, *extra]


def test_readme_commands_have_rules() -> None:
    snippets = readme_snippets(README.read_text())
    assert sum(kind == "bash" for kind, _ in snippets) >= 15, "README commands not found: parser broken?"
    for kind, command in snippets:
        if kind == "bash":
            as_argv(command)


@pytest.mark.realdata
def test_readme_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    data = data_dir()
    if not data.is_dir():
        pytest.skip(f"no real data at {data} (set MEDSSL_DATA_DIR)")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data.resolve())
    work = tmp_path / "medssl"  # as a clone beside ../shared: the README's paths work unchanged
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")
    monkeypatch.delenv("MEDSSL_DATA_DIR", raising=False)  # the README's paths find ../shared/data
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for kind, snippet in readme_snippets(README.read_text()):
        if kind == "python":
            done = subprocess.run(
                [sys.executable, "-c", snippet],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
            assert done.returncode == 0, f"README Python snippet failed:\n{snippet}\n{done.stderr[-3000:]}"
            continue
        argv = as_argv(snippet)
        if argv is None:
            continue
        code = run_medssl(argv)
        assert code == 0, f"README command failed: {snippet}\n{capfd.readouterr().err[-3000:]}"


def run_medssl(argv: list[str]) -> int:
    """``medssl <argv>`` in this process; its exit code (LightningCLI exits on ``--print_config``)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
