"""Checkpoints: weights in safetensors plus a JSON config; loading never unpickles anything.

A checkpoint is a directory:
    model.safetensors   every parameter and buffer (normaliser statistics, calibration included)
    config.json         format, gridtune version, feature schema version, task, model
                        hyper-parameters, normaliser statistics (readable copy), training-data
                        content hash, metrics and whatever else the caller puts in `meta`
    checksums.json      size and SHA-256 of the files above (and of results written beside them)

Both files are written atomically (temporary name, fsync, rename). Loading refuses, by name, a
checkpoint of a newer format, a file whose size or SHA-256 differs from its seal, and weights that
do not fit the config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gridtune import __version__
from gridtune.errors import CheckpointError, GridtuneError, SpecError
from gridtune.files import (
    atomic_path,
    check_sealed,
    damage_message,
    file_digest,
    jsonable,
    seal,
    unseal,
    write_json,
)
from gridtune.grids.features import SCHEMA_VERSION

FORMAT = "gridtune-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
RESTORE = "retrain it or restore the checkpoint from a copy"


def save_checkpoint(model: Any, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` (a `GridModelNet`) to `out_dir`; returns the directory.

    Args:
        model: the model; its `config`, `task` and normaliser are recorded.
        out_dir: created if needed; an existing checkpoint there is replaced.
        meta: extra JSON-able entries (`data_hash`, `metrics`, `grid`, ...) stored in config.json.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gridtune_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "task": model.task,
        "model": dataclasses.asdict(model.config),
        "normalizer": model.normalizer.to_dict(),
        **jsonable(dict(meta or {})),
    }
    unseal(out, [WEIGHTS, CONFIG])
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "task": model.task})
    write_json(out / CONFIG, config, sort_keys=True)
    seal(out, [WEIGHTS, CONFIG])
    return out


def seal_checkpoint(directory: str | Path, names: list[str], *, optional: bool = False) -> None:
    """Add result files written beside a checkpoint (`pretrain.json`, `history.json`, ...) to
    its seal, so `verify_checkpoint` covers them too; `optional` ones (a calibration) may be
    removed without the checkpoint counting as damaged."""
    seal(directory, names, optional=optional)


def verify_checkpoint(path: str | Path, *, deep: bool = True) -> int:
    """Check a checkpoint's files against its seal; returns how many files are sealed.

    Raises `CheckpointError` with one line naming the damaged file, what is wrong and the remedy.
    A checkpoint written before seals existed has none and passes on its structure alone.
    """
    from gridtune.files import read_checksums

    p = locate(path)
    damages = check_sealed(p, deep=deep, remedy=RESTORE)
    if damages:
        raise CheckpointError(damage_message(f"checkpoint `{p}`", damages))
    read_config(p)
    return len(read_checksums(p) or {})


def weights_digest(path: str | Path) -> str:
    """A short SHA-256 of a checkpoint's weights file: equal digests, the same weights."""
    return file_digest(locate(path) / WEIGHTS)["sha256"][:16]


def locate(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS, CONFIG):
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"checkpoint `{path}` does not exist")
    if not p.is_dir() or not (p / CONFIG).is_file() or not (p / WEIGHTS).is_file():
        raise CheckpointError(f"`{path}` is not a checkpoint: expected a directory with "
                              f"`{CONFIG}` and `{WEIGHTS}`")
    return p


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a checkpoint directory (validated, weights not read)."""
    p = locate(path)
    try:
        config = json.loads((p / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint `{p}` has a corrupt `{CONFIG}`: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"`{p / CONFIG}` is not a gridtune checkpoint config "
                              f"(format `{config.get('format') if isinstance(config, dict) else None}`)")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"`{p / CONFIG}` has format version `{version}`; valid: 1 to "
                              f"{FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint `{p}` has format version `{version}` (written by "
                              f"gridtune {config.get('gridtune_version')}); this gridtune "
                              f"({__version__}) reads up to {FORMAT_VERSION}: upgrade gridtune")
    for key in ("task", "model", "schema_version"):
        if key not in config:
            raise CheckpointError(f"checkpoint `{p}` config lacks `{key}`")
    return config


def model_config(config: dict[str, Any], where: str) -> Any:
    """The `ModelConfig` of a checkpoint's config.json (`config["model"]`).

    A setting added since the checkpoint was written takes the value it was trained with
    (`LEGACY_MODEL_SETTINGS`), so old checkpoints keep building the model they hold.
    """
    from gridtune.nn.model import LEGACY_MODEL_SETTINGS, ModelConfig
    from gridtune.specs import from_table

    return from_table(ModelConfig, {**LEGACY_MODEL_SETTINGS, **config["model"]}, where=where)


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load `(model, meta)` from a checkpoint directory (or one of its two files): the one loader
    for pre-trained and fine-tuned checkpoints alike.

    A fine-tuned checkpoint records its strategy and the strategy's settings under `finetune`;
    the strategy rebuilds the structure it left (e.g. adapter modules) before the weights load.
    The model is in eval mode. Raises `CheckpointError` when files are missing or corrupt, when
    the checkpoint's feature schema is not this gridtune's, or when weights do not fit the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from gridtune.nn.model import build_model

    p = locate(path)
    verify_checkpoint(p)
    config = read_config(p)
    if str(config["schema_version"]) != SCHEMA_VERSION:
        raise CheckpointError(f"checkpoint `{p}` uses feature schema `v{config['schema_version']}`, "
                              f"this gridtune's data use `v{SCHEMA_VERSION}`; retrain it on current data")
    try:
        model = build_model(model_config(config, f"{p / CONFIG} [model]"), config["task"])
        finetuned = config.get("finetune") or {}
        if finetuned.get("strategy"):
            from gridtune.core.registry import rebuild_model

            model = rebuild_model(model, finetuned["strategy"], finetuned.get("options") or {})
    except (SpecError, GridtuneError) as exc:
        raise CheckpointError(f"checkpoint `{p}`: {exc}") from None
    try:
        state = load_file(str(p / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint `{p}` has corrupt weights `{WEIGHTS}`: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint `{p}`: weights do not fit its config: {first}") from None
    model.eval()
    return model, config


def check_compatible(meta: dict[str, Any], *, task: str | None = None, schema_version: str | None = None,
                     data_name: str = "the data") -> None:
    """Fail with one message naming both sides when a checkpoint does not match the data."""
    if schema_version is not None and str(meta["schema_version"]) != str(schema_version):
        raise CheckpointError(f"checkpoint has feature schema `v{meta['schema_version']}` but "
                              f"{data_name} has `v{schema_version}`")
    if task is not None and meta["task"] != task:
        raise CheckpointError(f"checkpoint is for task `{meta['task']}` but `{task}` was asked "
                              f"for {data_name}")
