"""`gridtune report DIR`: regenerate plots, report.md and report.html of a study directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate a study's plots and report from its results")
    p.add_argument("directory", type=Path, help="study directory (holds study.json, results/)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.studies.report import summary_text, write_report
    from gridtune.studies.store import ResultsStore

    md, page = write_report(args.directory)
    store = ResultsStore(args.directory)
    headline = store.read_study()["headline"]
    print(summary_text(store.read_csv(), (headline[0], bool(headline[1]))))
    print()
    print(f"report   {page}")
    print(f"         {md}")
    return 0
