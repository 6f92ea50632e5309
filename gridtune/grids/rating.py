"""Re-rating a grid's branches from its nominal AC-OPF flows (the recipe's `[limits]`).

Used when a dataset's grid is prepared (`gridtune.grids.build`) and when a changed grid rates the
lines it adds (`gridtune.grids.changes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gridtune.errors import DataError
from gridtune.grids.model import GridModel
from gridtune.grids.scenarios import uniform_scenario


def rerate(grid: GridModel, rating_factor: float, min_rating_mva: float) -> tuple[GridModel, dict[str, Any]]:
    """Give each branch `rating_factor` x its flow at the nominal AC-OPF, at least `min_rating_mva`.

    Stock case14 and case118 carry no real thermal limits (no branch above 5% of its rating at
    the nominal OPF), so feasibility there hardly depends on topology. Rating every branch at a
    fixed margin over its nominal flow makes outages matter, as they do on a real grid.
    """
    from gridtune.grids.labeller import Labeller  # the AC-OPF stack, only when re-rating

    nominal = Labeller(grid, solutions=True, dc=False).label(uniform_scenario(grid, 1.0))
    if nominal.status != "feasible" or nominal.branch_flow_mva is None:
        raise DataError(f"grid `{grid.name}`: cannot re-rate branches, the nominal AC-OPF is "
                        f"`{nominal.status}` ({nominal.reason or nominal.certificate})")
    rate = np.maximum(rating_factor * nominal.branch_flow_mva, min_rating_mva)
    info = {"rating_factor": rating_factor, "min_rating_mva": min_rating_mva,
            "rule": "rate_a_mva = max(rating_factor * |S| at nominal AC-OPF, min_rating_mva)",
            "nominal_objective": nominal.objective,
            "max_stock_loading_percent": float(np.nanmax(nominal.loading_percent))
            if nominal.loading_percent is not None else None}
    return grid.with_ratings(rate), info
