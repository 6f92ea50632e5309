"""Survival analysis in the core: the Cox partial likelihood and Harrell's concordance index.

`cox_partial_likelihood` is the negative log partial likelihood of a proportional-hazards model
(Cox 1972) with tied event times handled as Breslow (1974) or Efron (1977) do; it is divided by
the number of events, so a linear model minimising it has the coefficients of a Cox regression
(lifelines' `CoxPHFitter`, statsmodels' `PHReg`). `concordance_index` is Harrell's C (Harrell et
al. 1982): among comparable pairs, the share in which the subject who failed first had the higher
risk. `CoxTask` makes both a `gridtune.core.trainer.Task`, so any encoder fine-tunes on censored
survival data with the core's strategies.

Batches are `(x, y)` with `y` of shape (B, 2): observed time and event indicator (1 = event,
0 = censored). Model outputs are log relative risks (higher = earlier failure), (B,) or (B, 1).
Within a mini-batch the risk sets are those of the batch: use batches as large as memory allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridtune.errors import GridtuneError, choices_text

TIES = ("efron", "breslow")


def cox_partial_likelihood(risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron") -> Tensor:
    """Negative log partial likelihood of log-risks `risk` per event (a scalar; 0 without events).

    With d events tied at time t, D their set and R the risk set (time >= t):
    Breslow: sum_D risk - d log sum_R exp(risk);
    Efron: sum_D risk - sum_{l<d} log(sum_R exp(risk) - l/d sum_D exp(risk)).

    Shapes:
        risk, time, event: (N,).
    """
    if ties not in TIES:
        raise GridtuneError(f"unknown ties method `{ties}`; valid: {choices_text(TIES)}")
    risk = risk.reshape(-1)
    time = time.reshape(-1)
    ev = event.reshape(-1).to(risk.dtype)
    if not (risk.shape == time.shape == ev.shape):
        raise GridtuneError(f"cox loss: risk `{tuple(risk.shape)}`, time `{tuple(time.shape)}` and "
                            f"event `{tuple(ev.shape)}` must have the same length")
    n_events = ev.sum()
    if float(n_events) == 0:
        return risk.sum() * 0.0  # no event, no information (keeps the graph)
    uniq, inv = torch.unique(time, sorted=True, return_inverse=True)
    k = len(uniq)
    shift = risk.detach().max()
    e = torch.exp(risk - shift)
    zeros = torch.zeros(k, dtype=risk.dtype)
    at = zeros.index_add(0, inv, e)  # sum of exp(risk) of everyone with time u_k
    risk_set = torch.flip(torch.cumsum(torch.flip(at, [0]), 0), [0])  # time >= u_k
    d = zeros.index_add(0, inv, ev)  # events at u_k
    if ties == "breslow":
        log_terms = (d * (torch.log(risk_set) + shift)).sum()
    else:
        tied = zeros.index_add(0, inv, e * ev)  # sum of exp(risk) of the events at u_k
        d_max = int(d.max())
        ell = torch.arange(d_max, dtype=risk.dtype).expand(k, d_max)  # (K, d_max)
        use = ell < d.unsqueeze(1)
        term = risk_set.unsqueeze(1) - ell / d.clamp(min=1).unsqueeze(1) * tied.unsqueeze(1)
        term = torch.where(use, term, torch.ones_like(term))  # masked entries: log 1 = 0
        log_terms = (torch.log(term) + shift * use).sum()
    return (log_terms - (risk * ev).sum()) / n_events


def concordance_index(risk: np.ndarray | Tensor, time: np.ndarray | Tensor,
                      event: np.ndarray | Tensor) -> float:
    """Harrell's C of log-risks (higher = earlier failure); NaN when no pair is comparable.

    A pair is comparable when the subject with the shorter time had an event, or when both times
    are equal and only one had an event (that one failed first). Concordant: the first to fail has
    the higher risk; equal risks count one half.
    """
    r = np.asarray(risk.detach() if isinstance(risk, Tensor) else risk, dtype=float).reshape(-1)
    t = np.asarray(time.detach() if isinstance(time, Tensor) else time, dtype=float).reshape(-1)
    e = np.asarray(event.detach() if isinstance(event, Tensor) else event).reshape(-1).astype(bool)
    if not (len(r) == len(t) == len(e)):
        raise GridtuneError("concordance: risk, time and event must have the same length")
    num = den = 0.0
    for start in range(0, len(r), 2048):  # rows i in chunks: memory O(2048 N)
        sl = slice(start, start + 2048)
        ti, ri, ei = t[sl, None], r[sl, None], e[sl, None]
        comparable = ei & ((ti < t[None, :]) | ((ti == t[None, :]) & ~e[None, :]))
        num += float(((ri > r[None, :]) & comparable).sum() + 0.5 * ((ri == r[None, :]) & comparable).sum())
        den += float(comparable.sum())
    return num / den if den else float("nan")


class CoxTask:
    """Cox proportional-hazards training on `(x, y)` batches, `y` = (B, 2) time and event.

    Args:
        ties: ``"efron"`` (default) or ``"breslow"``.
        name: shown in logs and errors (default: ``"cox"``).

    Metrics: `loss` (the partial likelihood over the whole split) and `c_index` (the validation
    score).
    """

    def __init__(self, ties: str = "efron", name: str = "cox") -> None:
        if ties not in TIES:
            raise GridtuneError(f"unknown ties method `{ties}`; valid: {choices_text(TIES)}")
        self.ties = ties
        self.name = name

    def target(self, batch: Any) -> Tensor:
        y = batch[1]
        if y.dim() != 2 or y.shape[1] != 2:
            raise GridtuneError(f"task `{self.name}`: the target must be (B, 2) time and event, "
                                f"got shape `{tuple(y.shape)}`")
        return y

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        y = self.target(batch)
        return cox_partial_likelihood(output.reshape(-1), y[:, 0], y[:, 1], self.ties)

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        risk = outputs.reshape(-1)
        return {"loss": float(cox_partial_likelihood(risk, targets[:, 0], targets[:, 1], self.ties)),
                "c_index": concordance_index(risk, targets[:, 0], targets[:, 1])}

    def val_score(self, metrics: dict[str, float]) -> float:
        return metrics["c_index"]
