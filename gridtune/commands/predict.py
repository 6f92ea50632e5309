"""`gridtune predict CHECKPOINT --data RECIPE_OR_DIR [--alpha A] --out FILE.parquet|FILE.csv`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="per-scenario feasibility with conformal sets, an unfamiliar-"
                       "grid flag and the recommended action (model or solve); for an OPF checkpoint, "
                       "per-bus predictions with conformal intervals")
    p.add_argument("checkpoint", type=Path, help="a checkpoint calibrated by `gridtune calibrate`")
    p.add_argument("--data", required=True, help="recipe .toml, dataset directory or default case name")
    p.add_argument("--alpha", type=float,
                   help="miscoverage level of the sets (default: the one calibrated)")
    variant = p.add_mutually_exclusive_group()
    variant.add_argument("--mondrian", dest="mondrian", action="store_true", default=None,
                         help="class-conditional sets (default: as calibrated)")
    variant.add_argument("--marginal", dest="mondrian", action="store_false",
                         help="one threshold for both classes (default: as calibrated)")
    p.add_argument("--out", required=True, type=Path, help="output file, .parquet or .csv")
    p.add_argument("--samples", type=int, help="use the first N scenarios")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.core.conformal import check_alpha
    from gridtune.errors import SpecError
    from gridtune.nn.checkpoint import read_config
    from gridtune.workflows.trust import load_calibration, predict

    if args.alpha is not None:
        check_alpha(args.alpha)  # bad input fails before any data is built
    if args.out.suffix.lower() not in (".parquet", ".csv"):
        raise SpecError(f"--out `{args.out}` must end in `.parquet` or `.csv`")
    if read_config(args.checkpoint)["task"] == "opf":
        frame = predict(args.checkpoint, args.data, alpha=args.alpha, out=args.out, samples=args.samples)
        print(f"predicted  {len(frame)} buses with OPF intervals (vm_pu, va_rad, pg_pu, qg_pu and "
              f"their _lo / _hi)")
        branches = frame.attrs.get("branches")
        if branches is not None:
            from gridtune.workflows.trust import branch_file

            over = int((branches["loading_percent_hi"] > 100.0).sum())
            print(f"branches   {len(branches)} rated branch loadings (percent of RATE_A) with intervals; "
                  f"{over} may exceed their rating (upper bound above 100)")
            print(f"written    {args.out}, {branch_file(args.out)}")
        else:
            print(f"written    {args.out}")
        return 0
    conformal, _, _ = load_calibration(args.checkpoint)
    conformal.thresholds(args.alpha, args.mondrian)
    frame = predict(args.checkpoint, args.data, alpha=args.alpha, mondrian=args.mondrian,
                    out=args.out, samples=args.samples)
    n = len(frame)
    by_set = frame["prediction_set"].value_counts().to_dict()
    alpha = conformal.alpha if args.alpha is None else args.alpha
    print(f"predicted  {n} scenarios at alpha {alpha:g}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_set.items())))
    print(f"unfamiliar {int(frame['unfamiliar'].sum())} of {n}; action model "
          f"{int((frame['action'] == 'model').sum())}, solve {int((frame['action'] == 'solve').sum())}")
    shift = frame.attrs.get("familiarity_shift_p")
    if shift is not None:
        verdict = ("the batch as a whole looks UNLIKE the training grid: re-calibrate on labels of "
                   "this grid before trusting the sets" if shift < 0.01 else "no sign that the batch as a whole "
                   "differs from the training grid")
        print(f"batch      familiarity shift p = {shift:.3g}: {verdict}")
    print(f"written    {args.out}")
    return 0
