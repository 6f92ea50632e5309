"""`gridtune demo`: run the embedded quickstart study (case14 -> case30) and print where the
report is. The README's main-job command; finishes within 10 minutes on 2 cores, cold caches."""

from __future__ import annotations

import argparse
from pathlib import Path


def quickstart_path() -> Path:
    """The embedded quickstart study spec (the shipped study `quickstart`)."""
    from gridtune.specs import shipped_path

    path = shipped_path("studies", "quickstart")
    if path is None:
        raise FileNotFoundError("gridtune/resources/studies/quickstart.toml is missing from the "
                                "installed package")
    return path


def register(sub: argparse._SubParsersAction) -> None:
    from gridtune.commands.study import add_run_arguments

    p = sub.add_parser("demo", help="run the embedded quickstart study (case14 -> case30) and "
                       "write its report",
                       description=__doc__.split("\n\n")[0])
    add_run_arguments(p)
    p.add_argument("--show-spec", action="store_true", help="print the study spec and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.commands.study import load_plan, run_and_print
    from gridtune.parallel import check_backend, check_workers

    path = quickstart_path()
    if args.show_spec:
        print(path.read_text(), end="")
        return 0
    check_backend(args.backend)
    check_workers(args.workers)
    plan = load_plan(path, args)
    print(f"gridtune demo: study `{plan.name}` from {path}")
    return run_and_print(plan, args.out or Path("runs") / "demo", args)
