"""The transfer verdict: did fine-tuning beat training from scratch at the same label budget?

Transfer gain = metric(strategy) - metric(scratch), per seed (paired when the same seeds and data
splits were used), with a percentile bootstrap confidence interval of the mean gain (Efron &
Tibshirani 1993). `negative_transfer` is true when the whole interval lies below zero (transfer
hurt), `positive_transfer` when it lies above zero; otherwise the verdict is `inconclusive`. With
a single seed there is no interval and neither flag is raised. Neither is raised with fewer than
`min_seeds` seeds (3: a bootstrap over 2 seeds has 4 distinct resamples), nor when the test set
each metric was measured on is smaller than `min_test` (the seed-wise interval leaves out the test
set's own sampling noise, which a small test set makes larger than the gains in question). This is
the only place a transfer verdict is computed: the CLI, the workflows and studies all call
`transfer_verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from gridtune.errors import GridtuneError

MIN_TEST = 1000  # fewest test items (grid scenarios, images, ...) a verdict is drawn from


@dataclass(frozen=True)
class Verdict:
    metric: str
    n_seeds: int
    gain_mean: float
    ci_low: float
    ci_high: float
    confidence: float
    negative_transfer: bool
    positive_transfer: bool
    note: str = ""

    @property
    def label(self) -> str:
        """`positive transfer`, `negative transfer`, or `inconclusive` when the interval spans
        zero (or there is no interval): the only words a report may use for a verdict."""
        if self.negative_transfer:
            return "negative transfer"
        if self.positive_transfer:
            return "positive transfer"
        return "inconclusive"

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def transfer_verdict(strategy: Sequence[float], scratch: Sequence[float], *, metric: str = "auroc",
                     higher_is_better: bool = True, paired: bool = True, n_boot: int = 10_000,
                     confidence: float = 0.95, seed: int = 0, min_seeds: int = 3,
                     n_test: int | None = None, min_test: int | None = None) -> Verdict:
    """Bootstrap the mean transfer gain over seeds.

    Args:
        strategy, scratch: the metric per seed for the fine-tuned model and the scratch baseline.
        metric: name for the report.
        higher_is_better: `False` for errors (the gain is then scratch - strategy).
        paired: seeds share data splits; resample seed-wise differences (default). Otherwise
            resample each side independently.
        n_boot: bootstrap resamples. confidence: interval level in (0, 1).
        min_seeds: fewest seeds for which a flag may be raised.
        n_test, min_test: the (smallest) test-set size behind the metrics and the fewest a
            verdict needs; below it the interval is reported and the verdict is `inconclusive`.
    """
    s = np.asarray(strategy, dtype=float)
    b = np.asarray(scratch, dtype=float)
    if len(s) == 0 or len(b) == 0:
        raise GridtuneError("transfer verdict needs at least one result per side, got "
                            f"`{len(s)}` strategy and `{len(b)}` scratch results")
    if paired and len(s) != len(b):
        raise GridtuneError(f"paired transfer verdict needs as many strategy as scratch seeds, got "
                            f"`{len(s)}` and `{len(b)}`")
    if not 0 < confidence < 1:
        raise GridtuneError(f"confidence must be in (0, 1), got `{confidence}`")
    if np.isnan(s).any() or np.isnan(b).any():
        raise GridtuneError(f"transfer verdict: `{metric}` has NaN values; a metric undefined "
                            "on some seed (one-class split?) cannot be compared")
    sign = 1.0 if higher_is_better else -1.0
    gain = float(sign * (s.mean() - b.mean()))
    n = min(len(s), len(b))
    if max(len(s), len(b)) < 2:
        return Verdict(metric, n, gain, float("nan"), float("nan"), confidence, False, False,
                       note="one seed: no confidence interval; run several seeds")
    rng = np.random.default_rng(seed)
    if paired:
        d = sign * (s - b)
        boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    else:
        bs = s[rng.integers(0, len(s), size=(n_boot, len(s)))].mean(axis=1)
        bb = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
        boots = sign * (bs - bb)
    alpha = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(boots, [alpha, 1 - alpha]))
    # a percentile bootstrap over 2 to 4 seeds has only a handful of distinct resamples: its
    # interval is narrower than the truth, so say so next to the flags
    note = "" if n >= 5 else f"only {n} seeds: the bootstrap interval is optimistic; use 5 or more"
    if n < min_seeds:
        return Verdict(metric, n, gain, lo, hi, confidence, False, False,
                       note=f"only {n} seeds: too few for a verdict; run {min_seeds} or more")
    if n_test is not None and min_test is not None and n_test < min_test:
        return Verdict(metric, n, gain, lo, hi, confidence, False, False,
                       note=f"test set of {n_test} < {min_test}: too small for a verdict; score on a "
                            "larger test split")
    return Verdict(metric, n, gain, lo, hi, confidence, negative_transfer=hi < 0,
                   positive_transfer=lo > 0, note=note)
