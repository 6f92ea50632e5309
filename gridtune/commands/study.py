"""`gridtune study run SPEC` / `gridtune study plan SPEC`: run a scripted transfer study
(resumable) and write its report, or print the cells it would run without running anything.
`gridtune study SPEC` is `gridtune study run SPEC`."""

from __future__ import annotations

import argparse
from pathlib import Path

ACTIONS = ("run", "plan")


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, dotted for tables, VALUE in TOML syntax "
                   "(e.g. --set data.samples=100 --set 'seeds=[0]'); repeatable")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="study directory (default: runs/<study name>); "
                   "rerunning with the same directory resumes")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--backend", default="local", help="local (process pool) or ray")
    p.add_argument("--no-report", action="store_true", help="skip plots and report (results.csv only)")
    add_set_argument(p)


def register(sub: argparse._SubParsersAction) -> None:
    from gridtune.specs import shipped_names

    p = sub.add_parser("study", help="run a transfer study: sources x targets x strategies x "
                       "labels x seeds x constraints",
                       usage="gridtune study [run | plan] SPEC [options]",
                       description="run (the default): expand the study matrix, build or reuse "
                       "datasets, pre-train once per source, run every cell, write results.csv, "
                       "plots and a report; finished cells are skipped on a rerun, failed cells "
                       "run again. plan: validate the spec, resolve it and print the datasets, "
                       "pre-training and cells (with fingerprints) without running anything.")
    p.add_argument("action", nargs="?", metavar="[run | plan]", help=argparse.SUPPRESS)
    p.add_argument("spec", nargs="?", type=Path, help="study .toml, or the name of a shipped "
                   "study (" + ", ".join(shipped_names("studies")) + ")")
    add_run_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.errors import SpecError
    from gridtune.parallel import check_backend, check_workers

    if args.action is None or (args.spec is None and args.action in ACTIONS
                               and not Path(args.action).exists()):
        raise SpecError("name a study spec: `gridtune study [run | plan] SPEC`")
    if args.spec is None:  # `gridtune study SPEC`
        action, spec_ref = "run", Path(args.action)
    elif args.action in ACTIONS:
        action, spec_ref = args.action, args.spec
    else:
        raise SpecError(f"unknown action `{args.action}`; valid: run, plan "
                        "(`gridtune study [run | plan] SPEC`)")
    plan = load_plan(spec_ref, args)
    if action == "plan":
        print(plan.describe())
        return 0
    check_backend(args.backend)
    check_workers(args.workers)
    return run_and_print(plan, args.out or Path("runs") / plan.name, args)


def overrides(args: argparse.Namespace) -> dict:
    from gridtune.studies.overrides import parse_assignment

    return dict(parse_assignment(a) for a in args.set)


def load_plan(spec_ref: Path | str, args: argparse.Namespace):
    """Validate the spec (with `--set` overrides) and resolve it into a plan, before any work."""
    from gridtune.studies.plan import make_plan
    from gridtune.studies.spec import load_study

    return make_plan(load_study(spec_ref, **overrides(args)))


def run_and_print(plan, out: Path, args: argparse.Namespace) -> int:
    """Run a resolved study and print the summary table and where the report is."""
    from gridtune.studies.runner import run_plan

    outcome = run_plan(plan, out, workers=args.workers, backend=args.backend,
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
