"""`gridtune evaluate CHECKPOINT --data RECIPE_OR_DIR [--json] [--out DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on a dataset's test split beside its baseline")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--data", required=True, help="recipe .toml, dataset directory or default case name")
    p.add_argument("--samples", type=int, help="use the first N scenarios")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--out", type=Path, help="directory for metrics.json and plots")
    p.add_argument("--constraints", type=Path,
                   help="constraint spec (TOML, or a shipped set such as monotone_load): add "
                   "violation rate, mean and max violation per constraint")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from gridtune.evaluation.evaluate import summary_lines, to_json
    from gridtune.nn.checkpoint import read_config
    from gridtune.workflows.evaluate import evaluate_checkpoint

    read_config(args.checkpoint)  # a bad checkpoint fails before any data is built
    report = evaluate_checkpoint(args.checkpoint, args.data, out_dir=args.out, samples=args.samples,
                                 constraints=args.constraints)
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print("\n".join(summary_lines(report)))
        for name, rep in report.get("constraints", {}).items():
            print(f"constraint {name}: violation rate {rep['violation_rate']:.4f}, mean "
                  f"{rep['mean_violation']:.3g}, max {rep['max_violation']:.3g}")
        if args.out is not None:
            print(f"written    {args.out / 'metrics.json'}" + "".join(f", {Path(p).name}" for p in report.get("plots", [])))
    return 0
