"""`gridtune study SPEC`: run a scripted transfer study (resumable) and write its report."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="study directory (default: runs/<study name>); "
                   "rerunning with the same directory resumes")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--backend", default="local", help="local (process pool) or ray")
    p.add_argument("--no-report", action="store_true", help="skip plots and report (results.csv only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, dotted for tables, VALUE in TOML syntax "
                   "(e.g. --set data.samples=100 --set 'seeds=[0]'); repeatable")


def register(sub: argparse._SubParsersAction) -> None:
    from gridtune.specs import shipped_names

    p = sub.add_parser("study", help="run a transfer study: sources x targets x strategies x "
                       "labels x seeds x constraints",
                       description="Expand the study matrix, build or reuse datasets, pre-train "
                       "once per source, run every cell, write results.csv, plots and a report. "
                       "Finished cells are skipped on a rerun; failed cells run again.")
    p.add_argument("spec", type=Path, help="study .toml, or the name of a shipped study ("
                   + ", ".join(shipped_names("studies")) + ")")
    add_run_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.parallel import check_backend, check_workers
    from gridtune.studies.spec import load_study

    check_backend(args.backend)
    check_workers(args.workers)
    spec = load_study(args.spec, **overrides(args))
    return run_and_print(spec, args.out or Path("runs") / spec.name, args)


def overrides(args: argparse.Namespace) -> dict:
    from gridtune.studies.spec import parse_assignment

    return dict(parse_assignment(a) for a in args.set)


def run_and_print(spec, out: Path, args: argparse.Namespace) -> int:
    """Run a loaded study and print the summary table and where the report is."""
    from gridtune.studies.runner import run_study

    outcome = run_study(spec, out, workers=args.workers, backend=args.backend,
                        report=not args.no_report)
    print()
    print(outcome.summary)
    print()
    print(f"results  {out / 'results.csv'}")
    if outcome.report_html is not None:
        print(f"report   {outcome.report_html}")
        print(f"         {outcome.report_md}")
    print(f"time     {outcome.wall_time_s:.0f} s ({outcome.ran} cells run, {outcome.skipped} "
          f"reused, {outcome.failed} failed)")
    return 1 if outcome.failed else 0
