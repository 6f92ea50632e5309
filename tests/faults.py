"""Hard-kill fault injection: run a gridtune command, SIGKILL it (and its workers) at a chosen
moment, run it again to completion, and compare what it leaves with an uninterrupted run.

Used by `tests/test_faults.py` (a few kill points) and `benchmarks/bench_faults.py` (the full
seeded sweep). Every run is a real `python -m gridtune.cli` process on real data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tests.templates import recipe_toml, study_toml

REPO = Path(__file__).resolve().parents[1]
@dataclasses.dataclass
class Workload:
    """One command under test: its arguments (with `{work}` for the work directory and `{data}`
    for a shared built dataset) and what to compare after it finished."""

    name: str
    argv: list[str]
    result: Callable[[Path], Any]


def _content_hash(work: Path) -> Any:
    from gridtune.grids.storage import verify_dataset

    verify_dataset(work / "ds")  # sealed and whole, not only the right hash
    return json.loads((work / "ds" / "manifest.json").read_text())["content_hash"]


def stable(obj: Any) -> Any:
    """`obj` without wall-clock figures (times, rates, speed-ups), which differ run to run."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items()
                if not (k.endswith("_s") or "per_s" in k or "speedup" in k or "time" in k
                        or k.endswith("_utc"))}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def _checkpoint_metrics(file: str) -> Callable[[Path], Any]:
    def read(work: Path) -> Any:
        from gridtune.nn.checkpoint import verify_checkpoint

        verify_checkpoint(work / "out")
        result = json.loads((work / "out" / file).read_text())
        return stable(result.get("test") or result.get("metrics"))
    return read


def _study_results(work: Path) -> Any:
    from gridtune.studies.store import verify_study

    verify_study(work / "study", data=False)
    frame = pd.read_csv(work / "study" / "results.csv")
    keep = ["cell_id", "status", "auroc", "scratch_auroc", "transfer_gain", "n_test"]
    return frame[[c for c in keep if c in frame.columns]].round(6).to_dict("records")


def workloads(data: Path, samples: int = 40) -> list[Workload]:
    """The four kinds of work the sweep kills: a build, pre-training, fine-tuning, a study."""
    return [
        Workload("data build", ["data", "build", "{work}/recipe.toml", "--out", "{work}/ds",
                                "--workers", "1", "--samples", str(samples)], _content_hash),
        Workload("pretrain", ["pretrain", "--data", str(data), "--task", "feasibility", "--out",
                              "{work}/out", "--epochs", "4", "--hidden", "16", "--layers", "2",
                              "--batch-size", "16", "--workers", "1"],
                 _checkpoint_metrics("metrics.json")),
        Workload("finetune", ["finetune", "--from", "{data_ckpt}", "--data", str(data),
                              "--labels", "12", "--strategy", "full", "--epochs", "4",
                              "--batch-size", "8", "--out", "{work}/out"],
                 _checkpoint_metrics("finetune.json")),
        Workload("study run", ["study", "run", "{work}/study.toml", "--out", "{work}/study",
                               "--workers", "1", "--no-report"], _study_results),
    ]


def prepare(root: Path, samples: int = 40) -> tuple[Path, Path]:
    """A built case9 dataset and a pre-trained checkpoint that the workloads share."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.toml").write_text(recipe_toml(samples))
    data = root / "data"
    run(["data", "build", str(root / "recipe.toml"), "--out", str(data), "--workers", "1"], root)
    ckpt = root / "ckpt"
    run(["pretrain", "--data", str(data), "--task", "feasibility", "--out", str(ckpt),
         "--epochs", "3", "--hidden", "16", "--layers", "2", "--workers", "1"], root)
    return data, ckpt


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["GRIDTUNE_CACHE"] = str(root / "cache")
    env["GRIDTUNE_FLUSH_EVERY_S"] = "0.2"  # part files often: kills land between them
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(argv: list[str], root: Path, kill_after_s: float | None = None,
        kill_when: Path | None = None) -> tuple[int, bool, str]:
    """Run `gridtune ARGV`; with `kill_after_s`, SIGKILL its process group at that moment; with
    `kill_when`, as soon as that file exists.

    Returns (exit code, whether it was killed, stderr). A run that must finish and does not
    raises with its stderr.
    """
    log = root / f".run-{time.monotonic_ns()}.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gridtune.cli", *argv], cwd=root,
                                env=_env(root), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        killed = False
        try:
            if kill_when is not None:
                while proc.poll() is None and not kill_when.exists():
                    time.sleep(0.02)
                if proc.poll() is None:
                    raise subprocess.TimeoutExpired(proc.args, 0)
            proc.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and every worker it started
            proc.wait()
            killed = True
    text = log.read_text()
    log.unlink()
    if not killed and proc.returncode != 0 and kill_after_s is None:
        raise RuntimeError(f"gridtune {' '.join(argv)} exited {proc.returncode}: {text[-2000:]}")
    return proc.returncode, killed, text


def fresh_work(work: Path, root: Path, samples: int) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "recipe.toml").write_text(recipe_toml(samples))
    (work / "study.toml").write_text(study_toml("faults", data=str(root / "data")))


def workload_argv(w: Workload, work: Path, root: Path) -> list[str]:
    return [a.replace("{work}", str(work)).replace("{data_ckpt}", str(root / "ckpt")) for a in w.argv]


def reference(w: Workload, root: Path, samples: int = 40) -> tuple[Any, float]:
    """The uninterrupted run's result and wall time."""
    work = root / f"ref-{w.name.replace(' ', '-')}"
    fresh_work(work, root, samples)
    start = time.perf_counter()
    run(workload_argv(w, work, root), root)
    return w.result(work), time.perf_counter() - start


@dataclasses.dataclass
class KillPoint:
    workload: str
    kill_after_s: float
    killed: bool
    equal: bool
    resume_stderr: str


def kill_and_resume(w: Workload, root: Path, kill_after_s: float, expected: Any, index: int,
                    samples: int = 40) -> KillPoint:
    """Kill `w` after `kill_after_s`, rerun it to completion, compare with `expected`."""
    work = root / f"kill-{w.name.replace(' ', '-')}-{index}"
    fresh_work(work, root, samples)
    _, killed, _ = run(workload_argv(w, work, root), root, kill_after_s=kill_after_s)
    _, _, err = run(workload_argv(w, work, root), root)
    got = w.result(work)
    shutil.rmtree(work)
    return KillPoint(w.name, kill_after_s, killed, got == expected, err)


def two_studies_one_cache(root: Path) -> tuple[list[int], list[str], list[Any]]:
    """Start two studies at once that need the same (not yet built) dataset in one cache
    directory; return their exit codes, stderr and results."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "shared.toml"
    spec.write_text(study_toml("shared", strategies=("full",), seeds=(0,), samples=24))
    procs, logs = [], []
    for name in ("a", "b"):
        log = open(root / f"{name}.err", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gridtune.cli", "study", "run", str(spec), "--out",
             str(root / name), "--workers", "1", "--no-report"], cwd=root, env=_env(root),
            stdout=subprocess.DEVNULL, stderr=log))
    codes = [p.wait(timeout=900) for p in procs]
    for log in logs:
        log.close()
    errs = [(root / f"{n}.err").read_text() for n in ("a", "b")]
    results = []
    for name in ("a", "b"):
        frame = pd.read_csv(root / name / "results.csv")
        results.append(frame[["cell_id", "status", "auroc"]].round(6).to_dict("records"))
    return codes, errs, results
