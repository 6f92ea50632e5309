"""Peak resident memory of a dataset build and of a study at two sizes: does it grow?

    PYTHONPATH=. python benchmarks/bench_memory.py --build-sizes 150 600 --cells 4 16

For each size, runs the real command in a fresh process tree and reports (a) the peak RSS of
its largest process (the kernel's `ru_maxrss` over every waited-for descendant) and (b) the peak
of the tree's summed RSS, sampled every 0.2 s with psutil. The baseline is the smaller size,
measured in the same run: a ratio near 1.0 at 4x the work means memory is flat.

Build: case118 with a fixed load-scale range (no calibration solves), 2 labelling workers.
Study: case9 -> case9 fine-tuning cells on one 60-scenario dataset (cells = seeds x strategies).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.templates import recipe_toml, study_toml  # noqa: E402

WRAPPER = ("import resource, subprocess, sys; "
           "code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


@dataclasses.dataclass
class TreeSample:
    """What sampling a process tree every `every_s` saw: the peak of its summed resident memory,
    each process's peak (bytes, by pid) and each process's CPU seconds as last seen (up to
    `every_s` of a process's end is missed)."""

    tree_peak: int = 0
    peaks: dict[int, int] = dataclasses.field(default_factory=dict)
    cpu_s: dict[int, float] = dataclasses.field(default_factory=dict)


def sample_tree(proc: subprocess.Popen, every_s: float = 0.2) -> TreeSample:
    """Sample `proc` and all its descendants until `proc` exits."""
    root = psutil.Process(proc.pid)
    seen = TreeSample()
    while proc.poll() is None:
        total = 0
        for p in (root, *root.children(recursive=True)):
            try:
                with p.oneshot():
                    rss, t = p.memory_info().rss, p.cpu_times()
            except psutil.Error:
                continue
            total += rss
            seen.peaks[p.pid] = max(seen.peaks.get(p.pid, 0), rss)
            seen.cpu_s[p.pid] = t.user + t.system
        seen.tree_peak = max(seen.tree_peak, total)
        time.sleep(every_s)
    return seen


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """(largest process peak MiB, tree total peak MiB, wall s) of `gridtune ARGV`.

    A fresh wrapper process runs the command, so its `RUSAGE_CHILDREN` peak covers this command's
    process tree only (Linux folds each reaped descendant's peak into its parent's).
    """
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, sys.executable, "-m", "gridtune.cli",
                             *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    tree_peak = sample_tree(proc).tree_peak
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"gridtune {' '.join(argv)} exited {proc.returncode}")
    largest_kib = int(out.strip().splitlines()[-1])
    return largest_kib / 1024, tree_peak / 2**20, time.perf_counter() - start


def main() -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-sizes", type=int, nargs=2, default=[150, 600])
    ap.add_argument("--cells", type=int, nargs=2, default=[4, 16], help="study cells (even)")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridtune-memory-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, PYTHONPATH=str(REPO), GRIDTUNE_CACHE=str(root / "cache"),
                   OMP_NUM_THREADS="1")
        if not args.skip_build:
            for n in args.build_sizes:
                (root / f"r{n}.toml").write_text(recipe_toml(n, case="case118", seed=0,
                                                             scale="[0.9, 1.3]", candidates=8))
                rows.append((f"case118 build, {n} scenarios", *measure(
                    ["data", "build", str(root / f"r{n}.toml"), "--out", str(root / f"ds{n}"),
                     "--workers", "2"], root, env)))
                print(rows[-1], flush=True)
        for cells in args.cells:
            (root / f"s{cells}.toml").write_text(study_toml("memory", seeds=range(cells // 2),
                                                            samples=60))
            rows.append((f"study, {cells} cells", *measure(
                ["study", "run", str(root / f"s{cells}.toml"), "--out", str(root / f"study{cells}"),
                 "--workers", "1", "--no-report"], root, env)))
            print(rows[-1], flush=True)
    print(f"{'run':<30} {'largest process MiB':>20} {'tree total MiB':>15} {'wall s':>8}")
    for name, largest, tree, wall in rows:
        print(f"{name:<30} {largest:>20.0f} {tree:>15.0f} {wall:>8.0f}")
    for a, b in ((0, 1), (2, 3)) if len(rows) == 4 else ((0, 1),):
        print(f"{rows[b][0]} / {rows[a][0]}: largest process x{rows[b][1] / rows[a][1]:.2f}, "
              f"tree x{rows[b][2] / rows[a][2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
