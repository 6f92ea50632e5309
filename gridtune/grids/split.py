"""The one train / validation / test split of a dataset: seeded and stratified by label status.

Pre-training, fine-tuning, evaluation and studies all call `split_indices`, so a checkpoint's test
split is the same graphs wherever it is scored; a checkpoint stores its seed and fractions.
"""

from __future__ import annotations

import numpy as np

from gridtune.errors import SpecError

SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def parse_split(text: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """Train / validation / test fractions from `"0.7,0.15,0.15"` (or a sequence): three positive
    numbers summing to 1; anything else is a `SpecError` naming what is valid."""
    try:
        parts = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1.0) > 1e-6:
        raise SpecError(f"split `{text}` is not valid: give three positive fractions train,val,test "
                        f"summing to 1, e.g. `{','.join(f'{f:g}' for f in SPLIT_FRACTIONS)}`")
    return (parts[0], parts[1], parts[2])


def split_indices(statuses: np.ndarray, seed: int = 0,
                  fractions: tuple[float, float, float] = SPLIT_FRACTIONS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split stratified by status: (train, val, test) index arrays, each sorted.

    Every status with at least three graphs puts at least one in each split.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for status in sorted(set(np.asarray(statuses).tolist())):
        idx = np.flatnonzero(statuses == status)
        idx = idx[rng.permutation(idx.size)]
        n = idx.size
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = n - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    return tuple(np.array(sorted(p), dtype=np.int64) for p in parts)  # type: ignore[return-value]
