"""Where a `fit` stopped: the state written after every epoch, so a killed run resumes there.

`fit(..., resume=FitResume(path, key))` writes a `FitState` to `path` (atomically) at the end of
each epoch and, when it starts and finds a state written under the same `key`, continues from
the epoch after it: model and optimizer state, learning-rate schedule, the best epoch so far and
its weights, patience, history, torch's random state and the training loader's shuffling
generator. A resumed fit ends with the same weights and history as an uninterrupted one (the
loaders must be `make_loader`'s, whose shuffling draws from `loader.generator`).

The key names everything the run depends on (configuration, data hash, split); a file written
under another key, or one that cannot be read, is ignored with a line on stderr and training
starts from epoch 0: a resume file is a cache of work done, never an input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gridtune.files import atomic_path

FORMAT = 1


@dataclass(frozen=True)
class FitResume:
    """Where `fit` keeps its per-epoch state (`path`) and what it must match to be resumed (`key`)."""

    path: Path
    key: str


@dataclass
class FitState:
    """Everything `fit` carries from one epoch to the next (`epoch` = the last finished one)."""

    key: str
    epoch: int
    stopped: bool
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    best_state: dict[str, Any] | None
    best_key: tuple[float, ...]
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, float]]
    since_best: int
    binding: bool
    step: int
    trained: dict[int, int]  # position in the optimizer's parameter list -> numel
    torch_rng: torch.Tensor
    loader_rng: torch.Tensor | None
    wall_time_s: float
    format: int = field(default=FORMAT)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.__dict__, tmp)

    @classmethod
    def load(cls, resume: FitResume) -> FitState | None:
        """The state at `resume.path` if it was written under `resume.key`, else None."""
        path = Path(resume.path)
        if not path.exists():
            return None
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            state = cls(**raw)
        except Exception as exc:  # a damaged or foreign file: start over, say why
            print(f"gridtune: {path} cannot be read ({type(exc).__name__}); training starts "
                  "from epoch 0", file=sys.stderr)
            return None
        if state.format != FORMAT or state.key != resume.key:
            print(f"gridtune: {path} belongs to another run (its configuration or data differ); "
                  "training starts from epoch 0", file=sys.stderr)
            return None
        return state
