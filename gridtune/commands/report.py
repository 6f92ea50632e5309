"""`gridtune report DIR`: regenerate plots, report.md and report.html of a study directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate a study's plots and report from its results")
    p.add_argument("directory", type=Path, help="study directory (holds study.json, results/)")
    p.add_argument("--verify", action="store_true", help="only check the study's files (records, "
                   "results.csv, checkpoints, datasets) against their checksums and say which "
                   "is damaged; writes nothing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.studies.report import summary_text, write_report
    from gridtune.studies.store import ResultsStore, verify_study

    if args.verify:
        checked = verify_study(args.directory)
        print(f"verified {args.directory}: {checked} files match their checksums")
        return 0
    verify_study(args.directory, data=False)  # a report is never written from a damaged store
    md, page = write_report(args.directory)
    store = ResultsStore(args.directory)
    headline = store.read_study()["headline"]
    print(summary_text(store.read_csv(), (headline[0], bool(headline[1]))))
    print()
    print(f"report   {page}")
    print(f"         {md}")
    return 0
