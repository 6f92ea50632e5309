"""`gridtune demo`: run the shipped study `changed_grid` (my grid changed: case30 -> case30_changed,
a model pre-trained on the base grid against scratch, five seeds, verdicts on about a thousand
held-out scenarios) and print where the report is. The README's main-job command; sized for 10
minutes on 2 cores with cold caches."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_STUDY = "changed_grid"


def demo_path() -> Path:
    """The study spec the demo runs (the shipped study `changed_grid`)."""
    from gridtune.specs import shipped_path

    path = shipped_path("studies", DEMO_STUDY)
    if path is None:
        raise FileNotFoundError(f"gridtune/resources/studies/{DEMO_STUDY}.toml is missing from the "
                                "installed package")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    from gridtune.commands.study import add_run_arguments

    p = sub.add_parser("demo", help="run the shipped study `changed_grid` (a model follows a "
                       "changed grid with a few labels, against scratch) and write its report",
                       description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--show-spec", action="store_true", help="print the study spec and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.commands.study import load_plan, run_and_print
    from gridtune.parallel import check_backend, check_workers

    path = demo_path()
    if args.show_spec:
        print(path.read_text(), end="")
        return 0
    check_backend(args.backend)
    check_workers(args.workers)
    plan = load_plan(path, args)
    print(f"gridtune demo: study `{plan.name}` from {path}")
    return run_and_print(plan, args.out or Path("runs") / "demo", args)
