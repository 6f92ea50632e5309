"""`gridtune verify PATH ...`: check datasets, checkpoints and study directories against their
seals (`checksums.json`): every file's size and SHA-256, parquet page CRCs, configs that fit their
weights. Writes nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check datasets, checkpoints and study directories against "
                       "their checksums; writes nothing")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                   help="a dataset directory, a checkpoint directory or a study directory")
    p.set_defaults(func=_run)


def kind_of(path: Path) -> str | None:
    """What `path` holds, from the files that name each kind; None when it is none of them."""
    if (path / "study.json").is_file():
        return "study"
    if (path / "config.json").is_file() or (path / "model.safetensors").is_file():
        return "checkpoint"
    if any((path / name).exists() for name in ("manifest.json", "scenarios.parquet", "recipe.json")):
        return "dataset"
    return None


def verify(path: Path) -> tuple[str, int]:
    """(kind, files checked) of `path`; raises `GridtuneError` with one line naming the damage."""
    from gridtune.errors import DataError

    if not path.exists():
        raise DataError(f"`{path}` does not exist")
    kind = kind_of(path) if path.is_dir() else None
    if kind == "study":
        from gridtune.studies.store import verify_study

        return kind, verify_study(path)
    if kind == "checkpoint":
        from gridtune.nn.checkpoint import verify_checkpoint

        return kind, verify_checkpoint(path)
    if kind == "dataset":
        from gridtune.grids.storage import verify_dataset

        return kind, verify_dataset(path, deep=True)
    raise DataError(f"`{path}` is not a dataset, checkpoint or study directory (expected "
                    "`manifest.json`, `config.json` with `model.safetensors`, or `study.json`)")


def _run(args: argparse.Namespace) -> int:
    from gridtune.errors import GridtuneError

    damaged = 0
    for path in args.paths:
        try:
            kind, n = verify(path)
        except GridtuneError as exc:
            damaged += 1
            print(f"gridtune verify: error: {exc}", file=sys.stderr)
            continue
        print(f"ok  {kind:<10}  {path}: {n} files match their checksums")
    return 2 if damaged else 0
