"""Writing artefact files: atomic writes, strict JSON, and the checksums of a directory.

Every file gridtune writes as part of an artefact (dataset tables and manifests, checkpoint
weights and configs, fine-tuning results, study records) is written to a temporary name in the
same directory, flushed to disk (fsync) and renamed over the target (`atomic_path`,
`atomic_write_text`, `write_json`): readers see the old file or the new one, never a mix, and a
hard kill leaves at most a hidden `.NAME.*.tmp` file behind. NaN / inf become null so JSON files
are strict JSON.

A finished artefact directory is sealed (`seal`): `checksums.json` records each file's size in
bytes and SHA-256. `check_sealed` compares the files with it and names every damaged one
(`Damage`): missing, truncated, longer than written, or with other content (a flipped bit, an
edit, or a file copied in from elsewhere).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "gridtune-checksums"


def jsonable(obj: Any) -> Any:
    """`obj` with numpy / torch values as Python values, paths as strings, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on leaving the block it is fsynced and renamed
    to `path` (and the directory fsynced, so the rename itself survives a power cut). On an
    exception the temporary file is removed and `path` is left as it was.

        with atomic_path(out / "scenarios.parquet") as tmp:
            frame.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artefacts get the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never a mix."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Atomic, strict JSON write of `jsonable(obj)`."""
    atomic_write_text(path, json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys,
                                       allow_nan=False) + "\n")


# ---- checksums ---------------------------------------------------------------------------------

def json_digest(payload: Any) -> str:
    """SHA-256 (hex) of `payload` as sorted-key JSON (other values as `str`): a key for
    "the same configuration and data" (study fingerprints, resumable training states)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | Path) -> dict[str, Any]:
    """`{"bytes": size, "sha256": hex digest}` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


@dataclasses.dataclass(frozen=True)
class Damage:
    """One damaged file of an artefact directory: which, what is wrong, what to do."""

    path: Path
    problem: str
    remedy: str
    # "damaged": the file must not be read; "unsealed": whole-looking but not yet sealed (a writer
    # stopped between writing it and sealing the directory): rerunning the writer seals it
    kind: str = "damaged"

    def line(self) -> str:
        return f"`{self.path}` {self.problem}; {self.remedy}"


def read_checksums(directory: str | Path) -> dict[str, dict[str, Any]] | None:
    """{relative path: digest} of a sealed directory; None when it was never sealed.

    A damaged `checksums.json` itself counts as unsealed for this call; `check_sealed` names it.
    """
    try:
        data = json.loads((Path(directory) / CHECKSUMS).read_text())
        files = data["files"] if data.get("format") == CHECKSUMS_FORMAT else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def seal(directory: str | Path, names: Iterable[str], *, merge: bool = True,
         optional: bool = False) -> Path:
    """Record size and SHA-256 of `names` (paths relative to `directory`) in `checksums.json`.

    With `merge`, entries of other files already sealed are kept (a study seals each record as
    it is written); a listed name whose file no longer exists is dropped. `optional` files may
    be removed later (e.g. a checkpoint's calibration): absent, they are not damage; present,
    they must match.
    """
    directory = Path(directory)
    files = (read_checksums(directory) or {}) if merge else {}
    for name in names:
        path = directory / name
        if path.is_file():
            files[str(name)] = {**file_digest(path), **({"optional": True} if optional else {})}
        else:
            files.pop(str(name), None)
    files = {k: files[k] for k in sorted(files)}
    write_json(directory / CHECKSUMS, {"format": CHECKSUMS_FORMAT, "files": files})
    return directory / CHECKSUMS


def reseal(directory: str | Path, names: Iterable[str]) -> None:
    """Update the seal of `names` when `directory` is sealed (e.g. results written into a
    checkpoint directory after the checkpoint), so rewriting a sealed file is not damage."""
    if read_checksums(directory) is not None:
        seal(directory, names)


def unseal(directory: str | Path, names: Iterable[str]) -> None:
    """Drop `names` from `checksums.json` (files about to be rewritten or removed)."""
    directory = Path(directory)
    files = read_checksums(directory)
    if files is None:
        return
    drop = set(map(str, names))
    if drop & files.keys():
        write_json(directory / CHECKSUMS, {"format": CHECKSUMS_FORMAT,
                                           "files": {k: v for k, v in files.items() if k not in drop}})


def check_file(directory: str | Path, name: str, expected: dict[str, Any] | None, *, deep: bool,
               remedy: str) -> Damage | None:
    """Compare one file with its recorded digest: size always, SHA-256 when `deep`."""
    path = Path(directory) / name
    if not path.is_file():
        return None if (expected or {}).get("optional") else Damage(path, "is missing", remedy)
    if expected is None:
        return None
    size = path.stat().st_size
    want = expected.get("bytes")
    if want is not None and size < want:
        return Damage(path, f"is truncated ({size} of {want} bytes)", remedy)
    if want is not None and size > want:
        return Damage(path, f"is longer than written ({size} bytes, {want} written)", remedy)
    if deep and expected.get("sha256") and file_digest(path)["sha256"] != expected["sha256"]:
        return Damage(path, "has other content than was written (SHA-256 differs: a flipped bit, "
                      "an edit or a file from elsewhere)", remedy)
    return None


def check_sealed(directory: str | Path, *, deep: bool = True, required: Iterable[str] = (),
                 remedy: str = "restore or rebuild it") -> list[Damage]:
    """Every damaged file of a sealed directory (empty when all match `checksums.json`).

    Args:
        directory: the artefact directory.
        deep: compare SHA-256 digests (reads every byte); else sizes only (a stat per file).
        required: files that must exist whether sealed or not.
        remedy: what the user should do, appended to each damage line.
    """
    directory = Path(directory)
    recorded = read_checksums(directory)
    out: list[Damage] = []
    if recorded is None and (directory / CHECKSUMS).is_file():
        out.append(Damage(directory / CHECKSUMS, "is unreadable (not the checksums gridtune "
                          "writes)", remedy))
    recorded = recorded or {}
    names = list(dict.fromkeys([*required, *recorded]))
    for name in names:
        d = check_file(directory, name, recorded.get(name), deep=deep, remedy=remedy)
        if d is not None:
            out.append(d)
    return out


def damage_message(what: str, damages: list[Damage]) -> str:
    """One line for one or more damaged files of `what`."""
    first = f"{what}: {damages[0].line()}"
    if len(damages) > 1:
        rest = ", ".join(f"`{d.path.name}`" for d in damages[1:])
        first += f" (also damaged: {rest})"
    return first
