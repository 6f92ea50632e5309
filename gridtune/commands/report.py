"""`gridtune report DIR`: regenerate plots, report.md and report.html of a study directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate a study's plots and report from its results")
    p.add_argument("directory", type=Path, help="study directory (holds study.json, results/)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.studies.report import summary_text, write_report
    from gridtune.studies.store import ResultsStore

    md, page = write_report(args.directory)
    study = json.loads((args.directory / "study.json").read_text())
    print(summary_text(ResultsStore(args.directory).read_csv(), tuple(study["headline"])))
    print()
    print(f"report   {page}")
    print(f"         {md}")
    return 0
