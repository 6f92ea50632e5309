"""Seeded scenario perturbations (loads, N-1 branch outages, generator outages, costs).

Scenario `i` of a recipe depends only on `(recipe.seed, i)` and the calibrated topologies, never
on build order or worker count: a resumed or extended build draws exactly the same scenarios.

Loads: a global scale times per-load multiplicative noise; Q follows P at each load's power
factor (both are multiplied by the same factor). Outages: one branch whose removal keeps the grid
connected, or one generator that is not at the reference bus.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from gridtune.grids.model import REF, GridModel

if TYPE_CHECKING:
    from gridtune.grids.profiles import LoadProfile

UNLABELED_ID_OFFSET = 1_000_000_000  # unlabelled scenarios draw from a disjoint id range


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
        hour: the load profile's hour (1-based label) the loads were taken from, or None.
    """

    scenario_id: int
    load_scale: float
    pd_mw: np.ndarray
    qd_mvar: np.ndarray
    branch_out: tuple[int, ...] = ()
    gen_out: tuple[int, ...] = ()
    cost_scale: np.ndarray | None = None
    hour: int | None = None


@dataclasses.dataclass(frozen=True)
class Topology:
    """A topology scenarios are drawn on, with its calibrated critical load scale.

    `critical_scale` is the uniform load scale where the AC-OPF stops being feasible (None when
    the recipe gives a fixed range and no calibration ran).
    """

    branch_out: tuple[int, ...] = ()
    gen_out: tuple[int, ...] = ()
    critical_scale: float | None = None

    @property
    def kind(self) -> str:
        if self.branch_out:
            return "branch"
        return "gen" if self.gen_out else "base"


def connectivity_safe_branches(grid: GridModel) -> list[int]:
    """In-service branches whose single outage keeps every bus connected (not bridges)."""
    g = nx.MultiGraph()
    g.add_nodes_from(range(grid.n_bus))
    on = np.flatnonzero(grid.branch_in_service)
    for k in on:
        g.add_edge(int(grid.f_bus[k]), int(grid.t_bus[k]), key=int(k))
    bridges = {frozenset(e) for e in nx.bridges(nx.Graph(g))}
    safe = []
    for k in on:
        f, t = int(grid.f_bus[k]), int(grid.t_bus[k])
        # a bridge of the simple graph is still safe when a parallel branch remains
        if frozenset((f, t)) in bridges and g.number_of_edges(f, t) < 2:
            continue
        safe.append(int(k))
    return safe


def outage_generators(grid: GridModel) -> list[int]:
    """In-service generators with capacity that are not at the reference bus."""
    ref = set(np.flatnonzero(grid.bus_type == REF))
    return [int(g) for g in np.flatnonzero(grid.gen_in_service)
            if int(grid.gen_bus[g]) not in ref and grid.max_p_mw[g] > 0]


def candidate_topologies(grid: GridModel, *, seed: int, n_minus_1: float, gen_outages: float,
                         candidates: int, contingencies: list[Topology] | None = None) -> list[Topology]:
    """The base topology plus up to `candidates` seeded single-branch and single-generator outages.

    With `contingencies` (a contingency table's outages, `gridtune.grids.profiles`) the outages
    are drawn from those instead: branch contingencies that keep every bus connected and generator
    contingencies off the reference bus (`usable_contingencies`).
    """
    rng = np.random.default_rng([seed, 7])
    out = [Topology()]
    if contingencies is not None:
        branch, gens = usable_contingencies(grid, contingencies)
        if n_minus_1 > 0:
            out += sorted((branch[i] for i in rng.permutation(len(branch))[:candidates]),
                          key=lambda t: t.branch_out)
        if gen_outages > 0:
            out += sorted((gens[i] for i in rng.permutation(len(gens))[:candidates]),
                          key=lambda t: t.gen_out)
        return out
    if n_minus_1 > 0:
        safe = connectivity_safe_branches(grid)
        pick = rng.permutation(safe)[:candidates]
        out += [Topology(branch_out=(int(k),)) for k in sorted(pick)]
    if gen_outages > 0:
        gens = outage_generators(grid)
        pick = rng.permutation(gens)[:candidates]
        out += [Topology(gen_out=(int(g),)) for g in sorted(pick)]
    return out


def usable_contingencies(grid: GridModel, contingencies: list[Topology]
                         ) -> tuple[list[Topology], list[Topology]]:
    """(branch, generator) contingencies gridtune can label: branch outages (with any generator
    outages of the same contingency) that leave every bus connected, and generator-only outages
    of generators `outage_generators` allows. An islanding contingency would make every scenario
    on it fail for a reason a feasibility label should not carry."""
    on = np.flatnonzero(grid.branch_in_service)
    allowed = set(outage_generators(grid))
    branch, gens = [], []
    for c in contingencies:
        if c.branch_out:
            g = nx.MultiGraph()
            g.add_nodes_from(range(grid.n_bus))
            out = set(c.branch_out)
            g.add_edges_from((int(grid.f_bus[k]), int(grid.t_bus[k])) for k in on if k not in out)
            if nx.is_connected(g):
                branch.append(c)
        elif c.gen_out and set(c.gen_out) <= allowed:
            gens.append(c)
    return branch, gens


# The `dispatch_values` entries every convex OPF model holds as cvxpy Parameters of the same name.
DISPATCH_PARAMETERS = ("pd", "branch_on", "pmin", "pmax", "c2", "c1", "c0")


def dispatch_values(grid: GridModel, scenario: Scenario, cost_pu: np.ndarray) -> dict[str, np.ndarray]:
    """Per-scenario values of the parameters every convex OPF model shares (DC-OPF, SOC, SDP).

    Args:
        cost_pu: (n_gen, 3) polynomial cost (c2, c1, c0) already expressed per p.u.

    Returns `pd` (p.u.), `branch_on` and `gen_on` (0/1), `pmin` / `pmax` (p.u., 0 when out) and
    `c2`, `c1`, `c0` (scaled by the scenario's cost scale, 0 when out; c2 clipped at 0 to keep
    the problem convex).
    """
    base = grid.base_mva
    branch_on = grid.branch_in_service.astype(float)
    branch_on[list(scenario.branch_out)] = 0.0
    gen_on = grid.gen_in_service.astype(float)
    gen_on[list(scenario.gen_out)] = 0.0
    scale = gen_on * (1.0 if scenario.cost_scale is None else np.asarray(scenario.cost_scale))
    return {
        "pd": np.asarray(scenario.pd_mw, dtype=float) / base,
        "branch_on": branch_on,
        "gen_on": gen_on,
        "pmin": gen_on * grid.min_p_mw / base,
        "pmax": gen_on * grid.max_p_mw / base,
        "c2": np.maximum(cost_pu[:, 0] * scale, 0.0),
        "c1": cost_pu[:, 1] * scale,
        "c0": cost_pu[:, 2] * scale,
    }


def set_dispatch_parameters(problem_model: object, values: dict[str, np.ndarray]) -> None:
    """Write `dispatch_values` into the model's cvxpy Parameters named in `DISPATCH_PARAMETERS`."""
    for name in DISPATCH_PARAMETERS:
        getattr(problem_model, name).value = values[name]


def uniform_scenario(grid: GridModel, scale: float, topology: Topology = Topology(),
                     scenario_id: int = -1, vary: np.ndarray | None = None) -> Scenario:
    """The nominal loads times `scale` on `topology` (used for calibration and tests); with
    `vary` (a region's buses, `gridtune.grids.regions`) only those loads are scaled."""
    factor = np.full(grid.n_bus, float(scale)) if vary is None else np.where(vary, float(scale), 1.0)
    total = float(scale) if vary is None else _total_scale(grid, factor)
    return Scenario(scenario_id=scenario_id, load_scale=total, pd_mw=grid.pd_mw * factor,
                    qd_mvar=grid.qd_mvar * factor, branch_out=topology.branch_out,
                    gen_out=topology.gen_out)


def _total_scale(grid: GridModel, factor: np.ndarray) -> float:
    """The total load relative to the nominal total under per-bus factors (no noise)."""
    nominal = float(grid.pd_mw.sum())
    return float(grid.pd_mw @ factor / nominal) if nominal else float(np.mean(factor))


def sample_scenario(grid: GridModel, topologies: list[Topology], scenario_id: int, *, seed: int,
                    n_minus_1: float, gen_outages: float, scale: str | tuple[float, float],
                    band: float, load_noise: float, cost_noise: float,
                    profile: LoadProfile | None = None, vary: np.ndarray | None = None) -> Scenario:
    """Draw scenario `scenario_id`; see the module docstring for the model.

    With `scale="auto"` the global scale is uniform on `critical * (1 -+ band)` of the drawn
    topology, so both classes lie near that topology's own feasibility boundary.

    With `profile` (`gridtune.grids.profiles.LoadProfile`), a uniformly drawn hour's per-bus
    factors multiply the
    nominal loads before the global scale and the noise; `load_scale` then records the total
    load relative to the nominal total (before noise). The hour is drawn last, so recipes
    without a profile draw exactly what they drew before.
    """
    rng = np.random.default_rng([seed, scenario_id])
    by_kind: dict[str, list[Topology]] = {"base": [], "branch": [], "gen": []}
    for t in topologies:
        by_kind[t.kind].append(t)
    u = rng.random()
    if u < n_minus_1 and by_kind["branch"]:
        topo = by_kind["branch"][rng.integers(len(by_kind["branch"]))]
    elif u < n_minus_1 + gen_outages and by_kind["gen"]:
        topo = by_kind["gen"][rng.integers(len(by_kind["gen"]))]
    else:
        topo = by_kind["base"][0]
    if scale == "auto":
        if topo.critical_scale is None:
            raise ValueError("scale='auto' needs calibrated topologies")
        low, high = topo.critical_scale * (1 - band), topo.critical_scale * (1 + band)
    else:
        low, high = scale  # type: ignore[misc]
    s = float(rng.uniform(low, high))
    factor = s * np.clip(1.0 + load_noise * rng.standard_normal(grid.n_bus), 0.0, None)
    if vary is not None:
        factor = np.where(vary, factor, 1.0)
        s = _total_scale(grid, np.where(vary, s, 1.0))
    cost_scale = None
    if cost_noise > 0:
        cost_scale = np.clip(1.0 + cost_noise * rng.standard_normal(grid.n_gen), 0.05, None)
    hour = None
    if profile is not None:
        h = int(rng.integers(len(profile.hours)))
        hour, at_hour = int(profile.hours[h]), profile.factors[h]
        factor = factor * at_hour
        nominal = grid.pd_mw.sum()
        s = float(s * (grid.pd_mw @ at_hour) / nominal) if nominal else s
    return Scenario(scenario_id=scenario_id, load_scale=s, pd_mw=grid.pd_mw * factor,
                    qd_mvar=grid.qd_mvar * factor, branch_out=topo.branch_out,
                    gen_out=topo.gen_out, cost_scale=cost_scale, hour=hour)
