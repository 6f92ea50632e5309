"""How far an input lies from the training data in a model's embedding space; modality-agnostic.

    fam = Familiarity.fit(train_embeddings)                   # reference set
    fam.calibrate(heldout_embeddings, false_alarm_rate=0.01)  # in-distribution, never trained on
    score, unfamiliar = fam.score(x), fam.flag(x)             # per input
    p_value = fam.shift_pvalue(fam.score(batch))              # a batch as a whole

Score: the distance to the `k`-th nearest reference embedding (default: the nearest) after standardising each dimension
with the reference mean and standard deviation (deep nearest neighbours, Sun et al. 2022, "Out-of-
Distribution Detection with Deep Nearest Neighbors", who use normalised penultimate features), or
the Mahalanobis distance to the reference mean with a shrunk covariance (Lee et al. 2018).
Both need only embeddings, so they work for any model that exposes one.

Threshold: the split-conformal quantile of the scores of held-out in-distribution examples at
level `false_alarm_rate` (`gridtune.core.conformal.conformal_quantile`), so that a new
in-distribution example is flagged with probability at most `false_alarm_rate` (exchangeability
assumed). Too few held-out examples for the rate is an error naming how many are needed.

Batch: a changed grid moves many inputs a little, which a per-input threshold at a low false-alarm
rate catches only in part. `shift_pvalue` compares a batch's scores with the held-out scores kept
at calibration (one-sided Mann-Whitney U test, higher = less familiar): a small p-value says the
batch as a whole is unlike the training data. It assumes the batch is a random draw of the
inputs the training data were drawn from; a batch chosen by a rule (e.g. only the heaviest
contingencies) can differ from them without any change of grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gridtune.core.conformal import check_alpha, conformal_quantile
from gridtune.errors import DataError, SpecError

METHODS = ("knn", "mahalanobis")
CHUNK = 2048  # query rows per distance block: bounds memory at CHUNK x reference size floats


@dataclasses.dataclass
class Familiarity:
    """A distance-to-training score with a calibrated threshold (see the module docstring).

    Attributes:
        method: `knn` or `mahalanobis`.
        k: neighbour rank for `knn`.
        mean, std: per-dimension statistics of the reference embeddings.
        reference: standardised reference embeddings (`knn`), or the inverse shrunk covariance
            (`mahalanobis`).
        threshold: score above which an input is unfamiliar (None until `calibrate`).
        false_alarm_rate: the rate the threshold was calibrated at.
        n_calibration: held-out examples behind the threshold.
        calibration_scores: their scores (for `shift_pvalue`).
    """

    method: str
    k: int
    mean: np.ndarray
    std: np.ndarray
    reference: np.ndarray
    threshold: float | None = None
    false_alarm_rate: float | None = None
    n_calibration: int = 0
    calibration_scores: np.ndarray | None = None

    @classmethod
    def fit(cls, embeddings: np.ndarray, *, method: str = "knn", k: int = 1, shrinkage: float = 0.1
            ) -> Familiarity:
        """Reference statistics from training embeddings (N, D)."""
        if method not in METHODS:
            raise SpecError(f"familiarity method `{method}` is not known; use one of "
                            + ", ".join(f"`{m}`" for m in METHODS))
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise DataError(f"familiarity needs at least 2 reference embeddings, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError("reference embeddings hold non-finite values")
        if method == "knn" and not 1 <= k < x.shape[0]:
            raise SpecError(f"familiarity k `{k}` must be between 1 and {x.shape[0] - 1} "
                            f"(the reference set has {x.shape[0]} embeddings)")
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        z = (x - mean) / std
        if method == "knn":
            reference = z.astype(np.float32)
        else:
            cov = np.cov(z, rowvar=False)
            cov = (1 - shrinkage) * cov + shrinkage * np.eye(cov.shape[0]) * np.trace(cov) / cov.shape[0]
            reference = np.linalg.pinv(cov).astype(np.float64)
        return cls(method, int(k), mean, std, reference)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Distance of each row (N, D) to the reference (higher = less familiar)."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.size:
            raise DataError(f"embeddings of shape {x.shape} do not match the reference width {self.mean.size}")
        z = (x - self.mean) / self.std
        if self.method == "mahalanobis":
            return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, self.reference, z), 0.0))
        ref = self.reference
        ref_sq = np.einsum("nd,nd->n", ref, ref)
        out = np.empty(z.shape[0])
        for start in range(0, z.shape[0], CHUNK):
            q = z[start:start + CHUNK].astype(np.float32)
            d2 = np.einsum("nd,nd->n", q, q)[:, None] + ref_sq[None, :] - 2.0 * q @ ref.T
            kth = np.partition(d2, self.k - 1, axis=1)[:, self.k - 1]
            out[start:start + CHUNK] = np.sqrt(np.maximum(kth, 0.0))
        return out

    def calibrate(self, embeddings: np.ndarray, *, false_alarm_rate: float = 0.01) -> Familiarity:
        """Set the threshold from held-out in-distribution embeddings (never the reference set)."""
        rate = check_alpha(false_alarm_rate, "false-alarm rate")
        scores = self.score(embeddings)
        self.threshold = conformal_quantile(scores, rate, what="familiarity calibration set")
        self.calibration_scores = np.sort(scores)
        self.false_alarm_rate = rate
        self.n_calibration = int(np.asarray(embeddings).shape[0])
        return self

    def flag(self, embeddings: np.ndarray | None = None, *, scores: np.ndarray | None = None) -> np.ndarray:
        """True where an input is unfamiliar (score above the calibrated threshold)."""
        if self.threshold is None:
            raise DataError("the familiarity score has no threshold: call `calibrate` first")
        s = self.score(embeddings) if scores is None else np.asarray(scores)
        return s > self.threshold

    def shift_pvalue(self, scores: np.ndarray) -> float | None:
        """One-sided Mann-Whitney U p-value that `scores` (a batch) are larger than the held-out
        in-distribution scores; None before `calibrate` or for an empty batch."""
        from scipy.stats import mannwhitneyu

        s = np.asarray(scores, dtype=float).ravel()
        if self.calibration_scores is None or s.size == 0:
            return None
        return float(mannwhitneyu(s, self.calibration_scores, alternative="greater").pvalue)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able settings, arrays) to store; `from_state` inverts it."""
        meta = {"method": self.method, "k": self.k, "threshold": self.threshold,
                "false_alarm_rate": self.false_alarm_rate, "n_calibration": self.n_calibration,
                "n_reference": int(self.reference.shape[0]) if self.method == "knn" else None}
        arrays = {"mean": self.mean, "std": self.std, "reference": self.reference}
        if self.calibration_scores is not None:
            arrays["calibration_scores"] = self.calibration_scores
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Familiarity:
        return cls(str(meta["method"]), int(meta["k"]), np.asarray(arrays["mean"], dtype=np.float64),
                   np.asarray(arrays["std"], dtype=np.float64), np.asarray(arrays["reference"]),
                   None if meta.get("threshold") is None else float(meta["threshold"]),
                   None if meta.get("false_alarm_rate") is None else float(meta["false_alarm_rate"]),
                   int(meta.get("n_calibration", 0)),
                   None if "calibration_scores" not in arrays else np.asarray(arrays["calibration_scores"]))
