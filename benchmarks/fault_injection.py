"""Fault injection: SIGKILL a pretraining process at random moments, resume from last.ckpt, compare the curve.

A tiny MoCo v2 run (``recipes/smoke/moco_2d.yaml``: ResNet-10 at width 0.125, EMA key encoder, a queue of
32 keys, 16 px views; synthetic 24 px PNGs; ``last.ckpt`` every ``--every`` steps; deterministic mode) is
first run once without interruption, in this process, as the reference loss curve. Then the same run is
started as a subprocess (``medssl pretrain`` with a callback that logs ``step loss`` after every optimiser
step) and killed with SIGKILL:

- ``random`` kills: when the run has logged one of ``--kills`` steps drawn at random over the run, after a
  further random 0-0.5 s, so the kill lands anywhere in a step (forward, backward, a checkpoint write, data
  loading);
- one ``in_save`` kill: the process kills itself halfway through writing ``last.ckpt`` over a complete one
  (its second save when it starts with none).

Each time the run is restarted with ``--ckpt_path auto`` until it completes. Checked per kill: the
``last.ckpt`` left behind loads with ``weights_only=True``; the restarted run continues at the checkpoint's
step + 1 (no jump back to the start); every loss any segment logged equals the reference's at that step;
the run completes the planned number of steps. Reported: steps lost per kill (logged before the kill but
after the checkpoint, so trained again).

Run: ``python benchmarks/fault_injection.py`` (a few minutes on 2 cores: every restart pays the start-up);
writes ``benchmarks/results/fault_injection.json`` and ``.md``. The test suite runs a short form
(``tests/reliability/test_fault_injection.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

SMOKE = "moco_2d.yaml"


class StepLog(pl.Callback):
    """Append ``<global step> <loss>`` to a file after every optimiser step (flushed: survives SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[int, float] = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self.values[trainer.global_step] = float(loss)
        with open(self.path, "a") as f:
            f.write(f"{trainer.global_step} {float(loss):.9g}\n")


def write_images(folder: Path, count: int = 24, size: int = 24) -> Path:
    """Random grey PNGs: the content does not matter, only that every run sees the same."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def recipe_args(source: Path, run_dir: Path, overlay: Path, epochs: int) -> list[str]:
    from medssl.recipes_dir import recipes_dir

    return [
        "--config",
        str(recipes_dir() / "smoke" / SMOKE),
        "--config",
        str(overlay),
        "--data.source",
        str(source),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.deterministic",
        "true",
        "--ckpt_path",
        "auto",
    ]


def write_overlay(path: Path, every: int) -> Path:
    path.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: medssl.reliability.checkpoints.RunCheckpoint\n"
        f"      init_args: {{save_last_every_n_steps: {every}}}\n"
    )
    return path


def read_log(path: Path) -> list[tuple[int, float]]:
    """The ``(step, loss)`` lines of a step log; a line cut by the kill is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                rows.append((int(parts[0]), float(parts[1])))
            except ValueError:
                continue
    return rows


def checkpoint_step(run_dir: Path) -> int | None:
    """``global_step`` of ``last.ckpt`` (read as a resume would: ``weights_only=True``), None if absent.

    Raises ``RuntimeError`` naming the file when it exists but does not load (what must never happen).
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    except Exception as err:
        raise RuntimeError(f"{last} does not load after a kill: {err}") from err


def worker(args: argparse.Namespace) -> None:
    """One (re)start of the run, logging every step; with ``--kill-in-save N`` it dies inside save ``N``."""
    from medssl.commands import pretrain
    from medssl.reliability import checkpoints

    if args.kill_in_save:
        saves = {"n": 0}
        real_save = torch.save

        def dying_save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
            if "last.ckpt" in str(getattr(f, "name", "")):
                saves["n"] += 1
            if saves["n"] < args.kill_in_save:
                real_save(obj, f, *a, **kw)
                return
            import io

            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoints.torch.save = dying_save  # type: ignore[attr-defined]
    run_args = recipe_args(Path(args.source), Path(args.run_dir), Path(args.overlay), args.epochs)
    pretrain.run(run_args, [StepLog(Path(args.log))])


def _launch(args: argparse.Namespace, run_dir: Path, log: Path, kill_in_save: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--source", str(args.source)]
    command += ["--run-dir", str(run_dir), "--overlay", str(args.overlay), "--log", str(log)]
    command += ["--epochs", str(args.epochs), "--kill-in-save", str(kill_in_save)]
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def _wait_for_step(process: subprocess.Popen, log: Path, step: int, timeout: float) -> bool:
    """Wait until ``log`` holds ``step`` (True) or the process ended (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = read_log(log)
        if rows and rows[-1][0] >= step:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"no step {step} within {timeout:.0f} s")


def inject(args: argparse.Namespace, reference: dict[int, float], planned: int) -> dict[str, Any]:
    """Kill, restart, repeat; then finish the run. Returns the figures and every check's outcome."""
    rng = random.Random(args.seed)
    run_dir = args.work / "run"
    kills: list[dict[str, Any]] = []
    plan = ["random"] * args.kills + (["in_save"] if args.kill_in_save else [])
    rng.shuffle(plan)
    targets = sorted(rng.sample(range(2, planned - 1), min(args.kills, planned - 3)))  # spread over the run
    segment = 0
    for kind in plan:
        segment += 1
        log = args.work / f"segment_{segment}.log"
        before = checkpoint_step(run_dir) or 0
        if kind == "in_save":
            # die in a save that has a complete last.ckpt to replace: the one that must survive the kill
            process = _launch(args, run_dir, log, kill_in_save=1 if before else 2)
            process.wait(timeout=args.timeout)
        else:
            target = next((t for t in targets if t > before), before + 1)
            targets = [t for t in targets if t > target]
            process = _launch(args, run_dir, log)
            if _wait_for_step(process, log, target, args.timeout):
                time.sleep(rng.uniform(0.0, 0.5))
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=args.timeout)
        rows = read_log(log)
        after = checkpoint_step(run_dir)
        reached = rows[-1][0] if rows else before
        kills.append(
            {
                "kind": kind,
                "returncode": process.returncode,
                "checkpoint_step_before": before,
                "first_step_logged": rows[0][0] if rows else None,
                "step_at_kill": reached,
                "checkpoint_step_after": after,
                "steps_lost": reached - (after or 0),
                "resumed_at_checkpoint": not rows or rows[0][0] == before + 1,
            }
        )
    log = args.work / "final.log"
    before_final = checkpoint_step(run_dir) or 0
    process = _launch(args, run_dir, log)
    _, err = process.communicate(timeout=args.timeout)
    rows = read_log(log)
    logged = [r for i in range(1, segment + 1) for r in read_log(args.work / f"segment_{i}.log")] + rows
    diffs = [abs(loss - reference[step]) for step, loss in logged if step in reference]
    final_step = checkpoint_step(run_dir)
    checks = {
        "final_exit_code_0": process.returncode == 0,
        "completed_planned_steps": final_step == planned,
        "every_resume_at_checkpoint_step_plus_1": all(k["resumed_at_checkpoint"] for k in kills)
        and (not rows or rows[0][0] == before_final + 1),
        "every_logged_loss_equals_reference": bool(diffs) and max(diffs) <= 1e-6,
        "every_step_logged": {s for s, _ in logged} == set(reference),
        # loadable: checkpoint_step() read it; absent only when the kill came before the first save
        "last_ckpt_present_after_every_kill": all(
            k["checkpoint_step_after"] is not None or k["step_at_kill"] < args.every for k in kills
        ),
        "steps_lost_within_checkpoint_interval": all(k["steps_lost"] <= args.every for k in kills),
    }
    if process.returncode != 0:
        checks["final_stderr_tail"] = err[-2000:]  # type: ignore[assignment]
    return {
        "planned_steps": planned,
        "checkpoint_every_n_steps": args.every,
        "kills": kills,
        "trials": len(kills),
        "max_steps_lost": max((k["steps_lost"] for k in kills), default=0),
        "mean_steps_lost": sum(k["steps_lost"] for k in kills) / max(1, len(kills)),
        "max_abs_loss_diff_vs_reference": max(diffs) if diffs else None,
        "checks": checks,
        "passed": all(v is True for k, v in checks.items() if k != "final_stderr_tail"),
    }


def reference_run(args: argparse.Namespace) -> dict[int, float]:
    """The uninterrupted run, in this process."""
    from medssl.commands import pretrain

    log = StepLog(args.work / "reference.log")
    pretrain.run(recipe_args(args.source, args.work / "reference", args.overlay, args.epochs), [log])
    return log.values


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    args.work.mkdir(parents=True, exist_ok=True)
    args.source = write_images(args.work / "images", count=args.images)
    args.overlay = write_overlay(args.work / "every_n_steps.yaml", args.every)
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    reference = reference_run(args)
    result = inject(args, reference, planned=max(reference))
    result.update(
        {
            "setup": (
                f"MoCo v2 smoke recipe ({SMOKE}: ResNet-10 x0.125, EMA key encoder, queue 32, 16 px views, "
                f"batch 4), {args.images} "
                f"synthetic 24 px PNGs, {args.epochs} epochs, deterministic, CPU"
            ),
            "seed": args.seed,
            "seconds": round(time.monotonic() - start, 1),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "versions": {"torch": torch.__version__, "pytorch_lightning": pl.__version__},
            "platform": platform.platform(),
        }
    )
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Fault injection: SIGKILL during pretraining, resume from last.ckpt",
        "",
        f"{result['setup']}; `last.ckpt` every {result['checkpoint_every_n_steps']} steps; "
        f"{result['planned_steps']} planned steps. Seed {result['seed']}, {result['seconds']} s, "
        f"1-min load average {result['load_average_1min'][0]} before, "
        f"{result['load_average_1min'][1]} after.",
        "",
        "| kill | kind | step at kill | last.ckpt step after | steps lost | resumed at ckpt + 1 |",
        "|---|---|---|---|---|---|",
    ]
    for i, k in enumerate(result["kills"], 1):
        lines.append(
            f"| {i} | {k['kind']} | {k['step_at_kill']} | {k['checkpoint_step_after']} | {k['steps_lost']} "
            f"| {'yes' if k['resumed_at_checkpoint'] else 'NO'} |"
        )
    lines += [
        "",
        f"- trials: **{result['trials']}**, steps lost per kill: at most **{result['max_steps_lost']}** "
        f"(mean {result['mean_steps_lost']:.1f}; bound: the checkpoint interval)",
        f"- max |loss - reference| over every logged step: {result['max_abs_loss_diff_vs_reference']}",
    ]
    lines += [f"- {name}: {'yes' if ok is True else ok}" for name, ok in result["checks"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=6, help="random SIGKILLs")
    parser.add_argument(
        "--kill-in-save", type=int, default=1, help="worker: die in this save; else: 1 = add one"
    )
    parser.add_argument("--every", type=int, default=4, help="last.ckpt every N steps")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--overlay", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or Path(tmp)
        result = run_benchmark(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fault_injection.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "fault_injection.md").write_text(markdown(result))
    print(markdown(result))
    if not result["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
