"""`gridtune federated SPEC.toml --out DIR [--mode simulation|loopback] [--seeds 0,1,2]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("federated", help="train one model across sites with Flower, personalise it per site, "
                                         "optionally with differential privacy")
    p.add_argument("spec", type=Path, help="federated spec .toml (docs/federated.md)")
    p.add_argument("--out", required=True, type=Path, help="output directory (results.json, report.md, plots/)")
    p.add_argument("--mode", choices=("simulation", "loopback"),
                   help="override the spec's mode: Flower's in-process simulation, or a server and one "
                        "client process per site on 127.0.0.1")
    p.add_argument("--seeds", help="override the spec's seeds, e.g. `0,1,2`")
    p.add_argument("--samples", type=int, help="override the spec's scenarios per site")
    p.add_argument("--workers", type=int, help="processes for building site data (default: all cores)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.errors import SpecError
    from gridtune.federated.run import run_federated
    from gridtune.federated.spec import load_spec

    overrides: dict[str, object] = {}
    if args.mode:
        overrides["mode"] = args.mode
    if args.samples is not None:
        overrides["samples"] = args.samples
    if args.seeds:
        try:
            overrides["seeds"] = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise SpecError(f"--seeds must be integers separated by commas, e.g. `0,1,2`, got `{args.seeds}`") from None
    spec = load_spec(args.spec, **overrides)
    result = run_federated(spec, args.out, workers=args.workers)
    s = result["summary"]
    print("test AUROC, mean over sites and seeds: " + ", ".join(f"{m} {v:.4f}" for m, v in s["mean_auroc"].items()))
    if s["epsilon_max"] is not None:
        print(f"epsilon spent: {s['epsilon_max']:.3g} at delta {spec.privacy.delta:g} ({spec.privacy.kind} level)")
    print(f"report: {args.out / 'report.md'}")
    return 0
