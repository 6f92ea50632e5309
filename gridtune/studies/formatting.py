"""Numbers as study reports print them: mean and sample standard deviation over seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def mean_sd(values: Iterable[float | None]) -> tuple[float, float]:
    """(mean, sample standard deviation) of the finite values; (nan, nan) when there are none,
    a standard deviation of 0 for one value."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def pm(s: tuple[float, float], fmt: str = ".3g", scale: float = 1.0) -> str:
    """`mean ± sd` of `mean_sd`'s pair (times `scale`), or `-` when there was nothing."""
    if not np.isfinite(s[0]):
        return "-"
    return f"{s[0] * scale:{fmt}} ± {s[1] * scale:{fmt}}"
