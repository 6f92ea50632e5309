"""Seeded scenario perturbations (loads, N-1 branch outages, generator outages, costs)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Scenario:
    """One operating point to label. Arrays are in the grid's internal bus / gen order.

    Attributes:
        scenario_id: position in the dataset (stable across resumes).
        load_scale: the global load scale drawn for this scenario (before per-load noise).
        pd_mw, qd_mvar: per-bus demand (n_bus,).
        branch_out: internal indices of outaged branches.
        gen_out: internal indices of outaged generators.
        cost_scale: per-generator multiplier of the cost polynomial (n_gen,), or None.
    """

    scenario_id: int
    load_scale: float
    pd_mw: np.ndarray
    qd_mvar: np.ndarray
    branch_out: tuple[int, ...] = ()
    gen_out: tuple[int, ...] = ()
    cost_scale: np.ndarray | None = None
