"""Hard-kill sweep: SIGKILL `data build`, `pretrain`, `finetune` and `study run` (with their
workers) at seeded random moments, resume each, and compare with an uninterrupted run.

    PYTHONPATH=. python benchmarks/bench_faults.py --points 6 --seed 18

Prints one line per kill point (workload, kill time, killed or already finished, equal or not)
and the totals. Baseline: the uninterrupted run of each workload, measured in the same run;
kill times are drawn uniformly between 5% and 95% of its wall time.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import kill_and_resume, prepare, reference, workloads  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=6, help="kill points per workload (default 6)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--samples", type=int, default=40, help="scenarios of the case9 dataset")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gridtune-faults-") as tmp:
        root = Path(tmp)
        data, _ = prepare(root, args.samples)
        points = []
        for w in workloads(data, args.samples):
            expected, wall_s = reference(w, root, args.samples)
            print(f"{w.name:<11} uninterrupted run {wall_s:6.1f} s", flush=True)
            for i in range(args.points):
                at = rng.uniform(0.05, 0.95) * wall_s
                p = kill_and_resume(w, root, at, expected, i, args.samples)
                points.append(p)
                print(f"  kill at {at:6.2f} s: {'killed' if p.killed else 'had finished'}, "
                      f"resumed result {'equal' if p.equal else 'DIFFERENT'}", flush=True)
    killed = [p for p in points if p.killed]
    equal = sum(p.equal for p in points)
    print(f"kill points {len(points)} ({len(killed)} killed mid-run), equal after resume "
          f"{equal}/{len(points)}, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    return 0 if equal == len(points) else 1


if __name__ == "__main__":
    sys.exit(main())
