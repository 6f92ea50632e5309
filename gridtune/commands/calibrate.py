"""`gridtune calibrate CHECKPOINT --data RECIPE_OR_DIR [--alpha A] [--mondrian] [--calibration-share F]`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate conformal prediction sets and the unfamiliar-grid "
                       "flag of a feasibility checkpoint (intervals of an OPF checkpoint) on labelled "
                       "scenarios it did not train on")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (receives conformal.json)")
    p.add_argument("--data", required=True, help="recipe .toml, dataset directory or default case name")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="miscoverage level: sets hold the true class with probability >= 1 - alpha "
                        "(default: 0.05)")
    p.add_argument("--mondrian", action="store_true",
                   help="class-conditional thresholds: coverage >= 1 - alpha for each class "
                        "(needs enough calibration scenarios of each class)")
    p.add_argument("--calibration-share", type=float,
                   help="calibrate on this share of the validation and test splits (default: the "
                        "validation split of the checkpoint's split rule)")
    p.add_argument("--false-alarm", type=float, default=0.01,
                   help="share of familiar scenarios the unfamiliar flag may raise (default: 0.01)")
    p.add_argument("--familiarity", choices=("knn", "mahalanobis"), default="knn",
                   help="distance in embedding space (default: knn, to the nearest training scenario)")
    p.add_argument("--samples", type=int, help="use the first N scenarios")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from gridtune.core.conformal import check_alpha
    from gridtune.nn.checkpoint import read_config
    from gridtune.workflows.trust import calibrate

    check_alpha(args.alpha)  # bad input fails before any data is built
    check_alpha(args.false_alarm, "false-alarm rate")
    read_config(args.checkpoint)
    r = calibrate(args.checkpoint, args.data, alpha=args.alpha, mondrian=args.mondrian,
                  calibration_share=args.calibration_share, false_alarm_rate=args.false_alarm,
                  familiarity=args.familiarity, samples=args.samples)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    if r.get("task") == "opf":
        print(f"calibrated {r['checkpoint']} on `{r['data']}` ({r['calibration_set']}): "
              f"{r['n_calibration']} solved scenarios, {r['n_buses']} buses")
        for col, widths in r["half_widths"].items():
            print(f"interval   {col}: +- " + ", ".join(f"{v:.4g} ({k} buses)" for k, v in widths.items())
                  + f" at alpha {r['alpha']:g}")
        if r.get("loading_half_width_percent") is not None:
            edges = [0.0, *r["loading_band_edges_percent"], math.inf]
            widths = ", ".join(f"{w:.4g} (predicted {edges[int(g[5:])]:g}-{edges[int(g[5:]) + 1]:g}%)"
                               for g, w in r["loading_half_width_percent"].items())
            print(f"interval   branch loading, percent of RATE_A: +- {widths} at alpha {r['alpha']:g} "
                  f"({r['n_calibration_branches']} rated branch loadings)")
        print(f"written    {r['file']}")
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in r["n_per_class"].items())
    thr = ", ".join(f"{k} {v:.4f}" for k, v in r["score_thresholds"].items())
    fam = r["familiarity"]
    print(f"calibrated {r['checkpoint']} on `{r['data']}` ({r['calibration_set']}): "
          f"{r['n_calibration']} labelled scenarios ({counts})")
    print(f"conformal  alpha {r['alpha']:g} ({'Mondrian, per class' if r['mondrian'] else 'marginal'}); "
          f"score thresholds {thr}; at least {r['min_calibration_size']} needed")
    print(f"familiar   {fam['method']} distance threshold {fam['threshold']:.4g} at false-alarm rate "
          f"{fam['false_alarm_rate']:g} ({fam['n_calibration']} held-out scenarios)")
    print(f"written    {r['file']}")
    return 0
