"""Split-conformal prediction sets and intervals, marginal and class-conditional (Mondrian);
modality-agnostic (numpy arrays in, numpy arrays out).

Split conformal (Vovk et al. 2005; Lei et al. 2018; Angelopoulos and Bates 2021, "A Gentle
Introduction to Conformal Prediction"): given `n` calibration examples exchangeable with the test
examples and a nonconformity score `s(x, y)`, the threshold

    q = the ceil((n + 1)(1 - alpha))-th smallest calibration score

gives sets `{y : s(x, y) <= q}` that contain the true label with probability at least
`1 - alpha` (marginal coverage), and at most `1 - alpha + 1 / (n + 1)` when scores have no ties.
The rank exists only when `ceil((n + 1)(1 - alpha)) <= n`, i.e. `n >= 1 / alpha - 1`:
`min_calibration_size(alpha)`; a smaller calibration set is refused, never silently answered
with an infinite threshold.

Classification uses the score `1 - p_y` (the probability the model gives the true class; Sadinle
et al. 2019, "least ambiguous set-valued classifiers"). A set may be empty when no class is
probable enough at the requested level: that is the model saying "neither", and callers should
treat it as "do not trust" (the coverage guarantee counts it as a miss, it is not hidden).

Mondrian (class-conditional) conformal (Vovk et al. 2005, ch. 4; Vovk 2012) computes one threshold
per class from that class's calibration examples only, so coverage holds for every class
separately, at the price of needing `min_calibration_size(alpha)` examples of each class.

Regression uses normalised scores `|y - y_hat| / sigma` (Papadopoulos et al. 2008; Lei et al.
2018, "locally weighted"), with `sigma` any positive difficulty estimate the caller supplies;
intervals are `y_hat +- q * sigma`, per output column.

Everything a calibration needs to answer at any `alpha` later is its sorted scores, so
`ConformalClassifier.to_dict` stores the scores (JSON-able) and not only one threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gridtune.errors import DataError, SpecError

FORMAT = "gridtune-conformal"


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """`alpha` as a float in (0, 1), else a `SpecError` saying what is valid."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not (0.0 < value < 1.0):
        raise SpecError(f"{name} `{alpha}` is not valid: give a miscoverage level strictly between 0 "
                        f"and 1, e.g. `0.05` for 95% coverage")
    return value


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration scores for which the split-conformal threshold at `alpha` is finite:
    the smallest `n` with `ceil((n + 1)(1 - alpha)) <= n`, i.e. `ceil(1 / alpha) - 1` up to
    rounding (19 at 0.05, 99 at 0.01)."""
    alpha = check_alpha(alpha)
    n = max(1, math.ceil(1.0 / alpha - 1.0) - 1)
    while _rank(n, alpha) > n:
        n += 1
    return n


def _rank(n: int, alpha: float) -> int:
    # 1e-9 guards against (n + 1)(1 - alpha) landing a hair above an integer in floating point
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def conformal_quantile(scores: np.ndarray, alpha: float, *, what: str = "calibration set") -> float:
    """The split-conformal threshold of `scores` at `alpha` (see the module docstring).

    Raises `DataError` naming how many scores are needed when there are too few.
    """
    alpha = check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=float).ravel())
    if not np.isfinite(s).all():
        raise DataError(f"{what} holds non-finite scores")
    n = s.size
    k = _rank(n, alpha)
    if k > n:
        need = min_calibration_size(alpha)
        raise DataError(f"{what} has {n} examples, too few for alpha `{alpha:g}`: split conformal needs "
                        f"at least {need} (n >= 1/alpha - 1); use more calibration data or a larger alpha "
                        f"(at least {1.0 / (n + 1):.3g} with {n})")
    return float(s[k - 1])


def coverage(sets: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose set (a boolean (N, C) membership array) holds the label (N,) ints."""
    sets = np.asarray(sets, dtype=bool)
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0:
        return math.nan
    return float(np.mean(sets[np.arange(labels.size), labels]))


def class_coverage(sets: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """Coverage among the rows of each class (None for a class with no rows)."""
    labels = np.asarray(labels, dtype=int)
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        sel = labels == c
        out[name] = coverage(np.asarray(sets)[sel], labels[sel]) if sel.any() else None
    return out


@dataclasses.dataclass
class ConformalClassifier:
    """Split-conformal prediction sets for a probabilistic classifier.

    Fit on calibration probabilities and labels (`fit`), then `sets(probs, alpha)` gives a boolean
    membership array (N, C). `mondrian=True` thresholds each class on its own calibration examples
    (coverage per class); otherwise one threshold from all of them (marginal coverage).

    Attributes:
        classes: class names, in the column order of the probabilities.
        scores: per class, the sorted calibration scores `1 - p_true` of that class's examples.
        alpha: the default miscoverage level (`sets` takes another when asked).
        mondrian: class-conditional thresholds by default.
    """

    classes: list[str]
    scores: dict[str, list[float]]
    alpha: float = 0.05
    mondrian: bool = False

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, alpha: float = 0.05,
            mondrian: bool = False) -> ConformalClassifier:
        """Calibrate on `probs` (N, C) (or (N,) for P(class 1) of a binary model) and int `labels`.

        Checks that the calibration set is large enough for `alpha` (per class with `mondrian`)."""
        alpha = check_alpha(alpha)
        p = as_class_probs(probs, len(classes))
        y = np.asarray(labels, dtype=int).ravel()
        if y.size != p.shape[0]:
            raise DataError(f"calibration has {p.shape[0]} probability rows but {y.size} labels")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"calibration labels must be class indices 0..{len(classes) - 1}")
        s = 1.0 - p[np.arange(y.size), y]
        scores = {name: np.sort(s[y == c]).tolist() for c, name in enumerate(classes)}
        model = cls(list(classes), scores, alpha, mondrian)
        model.thresholds(alpha, mondrian)  # refuse a calibration too small for the default alpha
        return model

    @property
    def n(self) -> int:
        return sum(len(v) for v in self.scores.values())

    def n_per_class(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.scores.items()}

    def thresholds(self, alpha: float | None = None, mondrian: bool | None = None) -> np.ndarray:
        """Per-class score thresholds (C,) at `alpha` (same value for every class unless Mondrian)."""
        alpha = self.alpha if alpha is None else check_alpha(alpha)
        mondrian = self.mondrian if mondrian is None else mondrian
        if mondrian:
            return np.array([conformal_quantile(np.asarray(self.scores[c]), alpha,
                                                what=f"calibration class `{c}`")
                             for c in self.classes])
        every = np.concatenate([np.asarray(self.scores[c], dtype=float) for c in self.classes])
        return np.full(len(self.classes), conformal_quantile(every, alpha))

    def sets(self, probs: np.ndarray, alpha: float | None = None, mondrian: bool | None = None) -> np.ndarray:
        """Boolean membership (N, C): class c is in row i's set when `1 - p_ic <= threshold_c`."""
        p = as_class_probs(probs, len(self.classes))
        return (1.0 - p) <= self.thresholds(alpha, mondrian)[None, :] + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": "classification", "score": "1 - p_true",
                "classes": list(self.classes), "alpha": self.alpha, "mondrian": self.mondrian,
                "n": self.n, "n_per_class": self.n_per_class(), "scores": self.scores}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformalClassifier:
        if d.get("format") != FORMAT or d.get("kind") != "classification":
            raise DataError(f"not a conformal classifier calibration (format `{d.get('format')}`)")
        return cls(list(d["classes"]), {k: [float(x) for x in v] for k, v in d["scores"].items()},
                   float(d["alpha"]), bool(d["mondrian"]))


def as_class_probs(probs: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) probabilities from (N, C), or from (N,) P(class 1) of a binary model."""
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        if n_classes != 2:
            raise DataError(f"one probability column given for {n_classes} classes")
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise DataError(f"probabilities of shape {p.shape} do not match {n_classes} classes")
    return p


def set_names(sets: np.ndarray, classes: Sequence[str], *, empty: str = "none", sep: str = "|") -> list[str]:
    """Each row's set as text: `feasible`, `feasible|infeasible`, or `empty` for no class."""
    sets = np.asarray(sets, dtype=bool)
    return [sep.join(c for c, m in zip(classes, row, strict=True) if m) or empty for row in sets]


@dataclasses.dataclass
class ConformalRegressor:
    """Split-conformal intervals per output column with normalised scores `|y - y_hat| / sigma`.

    `sigma` is the caller's difficulty estimate (a positive array shaped like `y`); without one the
    scores are plain absolute residuals (sigma = 1) and intervals have a constant width.
    With `groups` (an int per row, e.g. a node's type), thresholds are Mondrian per group.
    """

    columns: list[str]
    scores: dict[str, dict[str, list[float]]]  # column -> group -> sorted scores
    alpha: float = 0.05

    @classmethod
    def fit(cls, y: np.ndarray, y_hat: np.ndarray, columns: Sequence[str], *, sigma: np.ndarray | None = None,
            groups: np.ndarray | None = None, alpha: float = 0.05) -> ConformalRegressor:
        alpha = check_alpha(alpha)
        y, y_hat = _as_2d(y), _as_2d(y_hat)
        if y.shape != y_hat.shape or y.shape[1] != len(columns):
            raise DataError(f"targets {y.shape} and predictions {y_hat.shape} do not match {len(columns)} columns")
        sig = np.ones_like(y) if sigma is None else _as_2d(sigma)
        if np.any(~(sig > 0)):
            raise DataError("sigma must be positive everywhere")
        g = np.zeros(y.shape[0], dtype=int) if groups is None else np.asarray(groups, dtype=int).ravel()
        s = np.abs(y - y_hat) / sig
        scores: dict[str, dict[str, list[float]]] = {}
        for j, col in enumerate(columns):
            keep = np.isfinite(s[:, j])
            scores[col] = {str(k): np.sort(s[keep & (g == k), j]).tolist() for k in np.unique(g[keep])}
        model = cls(list(columns), scores, alpha)
        for col in columns:  # refuse a calibration too small for the default alpha
            for k in scores[col]:
                model.threshold(col, int(k), alpha)
        return model

    def threshold(self, column: str, group: int = 0, alpha: float | None = None) -> float:
        alpha = self.alpha if alpha is None else check_alpha(alpha)
        by_group = self.scores[column]
        if str(group) not in by_group:
            raise DataError(f"column `{column}` has no calibration scores for group `{group}`")
        return conformal_quantile(np.asarray(by_group[str(group)]), alpha,
                                  what=f"calibration of `{column}` (group {group})")

    def intervals(self, y_hat: np.ndarray, *, sigma: np.ndarray | None = None, groups: np.ndarray | None = None,
                  alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), each shaped like `y_hat` (N, K)."""
        y_hat = _as_2d(y_hat)
        sig = np.ones_like(y_hat) if sigma is None else _as_2d(sigma)
        g = np.zeros(y_hat.shape[0], dtype=int) if groups is None else np.asarray(groups, dtype=int).ravel()
        q = np.zeros_like(y_hat)
        for j, col in enumerate(self.columns):
            for k in np.unique(g):
                q[g == k, j] = self.threshold(col, int(k), alpha)
        return y_hat - q * sig, y_hat + q * sig

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": "regression", "score": "|y - y_hat| / sigma",
                "columns": list(self.columns), "alpha": self.alpha, "scores": self.scores}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformalRegressor:
        if d.get("format") != FORMAT or d.get("kind") != "regression":
            raise DataError(f"not a conformal regressor calibration (format `{d.get('format')}`)")
        return cls(list(d["columns"]), {c: {k: [float(x) for x in v] for k, v in g.items()}
                                        for c, g in d["scores"].items()}, float(d["alpha"]))


def interval_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per column, the share of finite targets inside [lower, upper]."""
    y, lo, hi = _as_2d(y), _as_2d(lower), _as_2d(upper)
    inside = (y >= lo) & (y <= hi)
    keep = np.isfinite(y)
    return np.array([float(np.mean(inside[keep[:, j], j])) if keep[:, j].any() else math.nan
                     for j in range(y.shape[1])])


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[:, None] if a.ndim == 1 else a

