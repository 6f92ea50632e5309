"""The `gridtune` command.

Each sub-command lives in `gridtune/commands/<name>.py` and exposes `register(subparsers)`, which
adds its parser and sets `func`. Command modules import heavy libraries inside `func`, so that
`gridtune --help` and `gridtune cases` start fast. A `GridtuneError` becomes one line on stderr
and exit code 2; nothing already written is removed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gridtune import __version__
from gridtune.errors import GridtuneError

COMMANDS = (
    "cases", "data", "pretrain", "distill", "finetune", "evaluate", "calibrate", "predict", "federated", "study", "report",
    "verify", "demo",
)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage already; keep its message to one line plus usage."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gridtune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gridtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gridtune.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gridtune.commands.{name}":
                raise
            continue  # command not part of this build yet
        module.register(sub)
    return parser


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM (`kill`, a scheduler's timeout) like Ctrl-C: the same clean stop, worker
    processes ended, finished work kept. Only from the main thread (signal's rule)."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    _interrupt_on_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except GridtuneError as exc:
        print(f"gridtune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gridtune {args.command}: interrupted; finished work is kept, rerun to resume",
              file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
