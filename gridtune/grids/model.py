"""`GridModel`: the arrays of one grid, in MATPOWER's layout and pandapower's internal bus order.

Every solver (AC-OPF, DC-OPF, SOC / SDP relaxations), the scenario sampler and the feature builder
read the grid through this one object, built once per grid from a pandapower net with
`pandapower.converter.pypower.to_ppc`. Scenarios never copy or mutate the pandapower net: they
carry per-bus loads and outage masks that solvers apply to these arrays.

Units: powers in MW / Mvar (as MATPOWER), impedances in p.u. on `base_mva`, angles in degrees.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import numpy as np

# MATPOWER column indices (bus, gen, branch, gencost), as in pandapower.pypower.idx_*.
from pandapower.pypower.idx_brch import (
    ANGMAX,
    ANGMIN,
    BR_B,
    BR_R,
    BR_STATUS,
    BR_X,
    F_BUS,
    RATE_A,
    SHIFT,
    T_BUS,
    TAP,
)
from pandapower.pypower.idx_bus import BASE_KV, BS, BUS_TYPE, GS, PD, QD, VMAX, VMIN
from pandapower.pypower.idx_gen import GEN_BUS, GEN_STATUS, PMAX, PMIN, QMAX, QMIN, VG

from gridtune.errors import CaseError

REF, PV, PQ = 3, 2, 1  # MATPOWER bus types
# How a branch's RATE_A limits it in the AC-OPF: "current" is pandapower's OPF (|I| <= rate at
# nominal voltage, `OPF_FLOW_LIM = 2`), used for the default cases and pandapower nets;
# "apparent_power" is MATPOWER's default (|S| <= rate in MVA at both ends, `OPF_FLOW_LIM = 0`),
# used for MATPOWER case files.
FLOW_LIMITS = ("current", "apparent_power")


@dataclasses.dataclass(frozen=True, eq=False)
class GridModel:
    """One grid's static data.

    Attributes:
        name: case name or file stem.
        base_mva: system base power (MVA).
        ppc: the MATPOWER-style case dict (bus, gen, branch, gencost, baseMVA) in internal bus
            order (buses numbered 0..n-1). Treat as read-only; solvers copy what they change.
        bus_ids: pandapower bus index (MATPOWER bus number for a MATPOWER file) of each
            internal bus, shape (n_bus,).
        flow_limit: what RATE_A limits, one of `FLOW_LIMITS` (default: "current").
    """

    name: str
    base_mva: float
    ppc: dict[str, Any]
    bus_ids: np.ndarray
    flow_limit: str = "current"

    @property
    def apparent_power_limits(self) -> bool:
        """Branch limits on |S| in MVA (MATPOWER) rather than on |I| (pandapower)."""
        return self.flow_limit == "apparent_power"

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_bus(self) -> int:
        return int(self.ppc["bus"].shape[0])

    @property
    def n_branch(self) -> int:
        return int(self.ppc["branch"].shape[0])

    @property
    def n_gen(self) -> int:
        return int(self.ppc["gen"].shape[0])

    # ---- bus data ----------------------------------------------------------------------------
    @property
    def pd_mw(self) -> np.ndarray:
        return self.ppc["bus"][:, PD].copy()

    @property
    def qd_mvar(self) -> np.ndarray:
        return self.ppc["bus"][:, QD].copy()

    @property
    def gs_mw(self) -> np.ndarray:
        return self.ppc["bus"][:, GS].copy()

    @property
    def bs_mvar(self) -> np.ndarray:
        return self.ppc["bus"][:, BS].copy()

    @property
    def min_vm_pu(self) -> np.ndarray:
        return self.ppc["bus"][:, VMIN].copy()

    @property
    def max_vm_pu(self) -> np.ndarray:
        return self.ppc["bus"][:, VMAX].copy()

    @property
    def bus_type(self) -> np.ndarray:
        return self.ppc["bus"][:, BUS_TYPE].astype(int)

    @property
    def base_kv(self) -> np.ndarray:
        return self.ppc["bus"][:, BASE_KV].copy()

    # ---- generators ----------------------------------------------------------------------------
    @property
    def gen_bus(self) -> np.ndarray:
        return self.ppc["gen"][:, GEN_BUS].astype(int)

    @property
    def gen_in_service(self) -> np.ndarray:
        return self.ppc["gen"][:, GEN_STATUS] > 0

    @property
    def min_p_mw(self) -> np.ndarray:
        return self.ppc["gen"][:, PMIN].copy()

    @property
    def max_p_mw(self) -> np.ndarray:
        return self.ppc["gen"][:, PMAX].copy()

    @property
    def min_q_mvar(self) -> np.ndarray:
        return self.ppc["gen"][:, QMIN].copy()

    @property
    def max_q_mvar(self) -> np.ndarray:
        return self.ppc["gen"][:, QMAX].copy()

    @property
    def vg_pu(self) -> np.ndarray:
        return self.ppc["gen"][:, VG].copy()

    def gen_cost(self) -> np.ndarray:
        """Polynomial cost per generator as (c2, c1, c0) in $/MW^2h, $/MWh, $/h; shape (n_gen, 3).

        Only MATPOWER model 2 (polynomial) with at most 3 coefficients is supported; piecewise
        linear costs raise `CaseError`.
        """
        gc = self.ppc["gencost"][: self.n_gen]
        if np.any(gc[:, 0] != 2):
            raise CaseError(f"grid `{self.name}` has piecewise-linear generator costs; only "
                            "polynomial costs (MATPOWER model 2) are supported")
        out = np.zeros((self.n_gen, 3))
        for g, row in enumerate(gc):
            n = int(row[3])
            coeffs = row[4: 4 + n]  # highest order first
            if n > 3:
                raise CaseError(f"grid `{self.name}` generator {g} has a cost polynomial of degree "
                                f"`{n - 1}`; at most 2 (quadratic) is supported")
            out[g, 3 - n:] = coeffs
        return out

    # ---- branches ------------------------------------------------------------------------------
    @property
    def f_bus(self) -> np.ndarray:
        return self.ppc["branch"][:, F_BUS].real.astype(int)

    @property
    def t_bus(self) -> np.ndarray:
        return self.ppc["branch"][:, T_BUS].real.astype(int)

    @property
    def r_pu(self) -> np.ndarray:
        return self.ppc["branch"][:, BR_R].real.copy()

    @property
    def x_pu(self) -> np.ndarray:
        return self.ppc["branch"][:, BR_X].real.copy()

    @property
    def b_pu(self) -> np.ndarray:
        return self.ppc["branch"][:, BR_B].real.copy()

    @property
    def rate_a_mva(self) -> np.ndarray:
        """Long-term rating; 0 means unlimited (MATPOWER convention)."""
        return self.ppc["branch"][:, RATE_A].real.copy()

    @property
    def tap_ratio(self) -> np.ndarray:
        tap = self.ppc["branch"][:, TAP].real.copy()
        tap[tap == 0] = 1.0  # MATPOWER: 0 means a line (ratio 1)
        return tap

    @property
    def shift_degree(self) -> np.ndarray:
        return self.ppc["branch"][:, SHIFT].real.copy()

    @property
    def is_transformer(self) -> np.ndarray:
        raw = self.ppc["branch"][:, TAP].real
        return (raw != 0) & (raw != 1) | (self.ppc["branch"][:, SHIFT].real != 0)

    @property
    def branch_in_service(self) -> np.ndarray:
        return self.ppc["branch"][:, BR_STATUS].real > 0

    @property
    def min_angle_degree(self) -> np.ndarray:
        return self.ppc["branch"][:, ANGMIN].real.copy()

    @property
    def max_angle_degree(self) -> np.ndarray:
        return self.ppc["branch"][:, ANGMAX].real.copy()

    @property
    def angle_limited(self) -> np.ndarray:
        """Branches with an angle-difference limit: ANGMIN or ANGMAX nonzero and within
        (-360, 360) degrees (MATPOWER's `makeAang` rule; status not considered)."""
        lo, hi = self.min_angle_degree, self.max_angle_degree
        return ((lo != 0) & (lo > -360)) | ((hi != 0) & (hi < 360))

    def with_ratings(self, rate_a_mva: np.ndarray) -> GridModel:
        """A copy with new branch ratings (MVA; 0 = unlimited)."""
        ppc = copy.deepcopy(self.ppc)
        ppc["branch"][:, RATE_A] = rate_a_mva
        return dataclasses.replace(self, ppc=ppc)


def grid_from_net(net: Any, name: str) -> GridModel:
    """Build a `GridModel` from a pandapower net (OPF mode: limits and costs included)."""
    import logging

    from pandapower.converter.pypower import to_ppc

    # pandapower logs "gen vm_pu > bus max_vm_pu ... Setting bus limit" here: informational only
    pp_logger = logging.getLogger("pandapower")
    level = pp_logger.level
    pp_logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ppc = to_ppc(net, init="flat", mode="opf", check_connectivity=False)
        except Exception as exc:  # pandapower raises many types on malformed nets
            raise CaseError(f"grid `{name}` cannot be converted for OPF: {exc}") from exc
        finally:
            pp_logger.setLevel(level)
    keep = {k: ppc[k] for k in ("baseMVA", "bus", "gen", "branch", "gencost")}
    for k in ("bus", "gen", "branch", "gencost"):
        keep[k] = np.array(keep[k].real if np.iscomplexobj(keep[k]) else keep[k], dtype=float)
    lookup = net._pd2ppc_lookups["bus"]
    bus_ids = np.full(keep["bus"].shape[0], -1, dtype=np.int64)
    for pp_bus in net.bus.index:
        if pp_bus < len(lookup) and lookup[pp_bus] >= 0 and lookup[pp_bus] < len(bus_ids):
            bus_ids[lookup[pp_bus]] = pp_bus
    return GridModel(name=name, base_mva=float(keep["baseMVA"]), ppc=keep, bus_ids=bus_ids)


def pair_branches(ends: np.ndarray, x: np.ndarray, other_ends: np.ndarray,
                  other_x: np.ndarray) -> np.ndarray:
    """For each branch of one list (`ends`: (n, 2) end bus numbers, `x`: reactance), the row of
    another list holding the same branch: the same end buses in either direction and the nearest
    reactance, each row of the other list used once (parallel branches paired in order); -1
    where no unused branch of the other list joins the same buses.

    Two descriptions of one grid list branches in different orders (a MATPOWER file and
    pandapower's conversion of it: lines, then transformers and impedances)."""
    free: dict[tuple[int, int], list[int]] = {}
    for k, (f, t) in enumerate(np.asarray(other_ends, dtype=np.int64)):
        free.setdefault((min(f, t), max(f, t)), []).append(k)
    other_x = np.asarray(other_x, dtype=float)
    out = np.full(len(ends), -1, dtype=np.int64)
    for r, (f, t) in enumerate(np.asarray(ends, dtype=np.int64)):
        candidates = free.get((min(f, t), max(f, t)))
        if candidates:
            best = min(candidates, key=lambda k: abs(other_x[k] - float(x[r])))
            candidates.remove(best)
            out[r] = best
    return out


def grid_hash(grid: GridModel) -> str:
    """Content hash of a grid's arrays (name excluded): equal grids give equal hashes."""
    import hashlib

    h = hashlib.sha256()
    h.update(repr(grid.base_mva).encode())
    if grid.flow_limit != "current":  # grids with current limits hash as before the field existed
        h.update(grid.flow_limit.encode())
    for key in ("bus", "gen", "branch", "gencost"):
        arr = np.ascontiguousarray(np.round(np.asarray(grid.ppc[key], dtype=float), 10))
        h.update(key.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def grid_to_dict(grid: GridModel) -> dict[str, Any]:
    """JSON-ready form of a grid (stored inside each dataset so it is self-contained)."""
    out = {
        "name": grid.name,
        "base_mva": grid.base_mva,
        "bus_ids": grid.bus_ids.tolist(),
        **{k: np.asarray(grid.ppc[k], dtype=float).tolist() for k in ("bus", "gen", "branch", "gencost")},
    }
    if grid.flow_limit != "current":
        out["flow_limit"] = grid.flow_limit
    return out


def grid_from_dict(d: dict[str, Any]) -> GridModel:
    ppc = {"baseMVA": d["base_mva"]}
    for k in ("bus", "gen", "branch", "gencost"):
        ppc[k] = np.array(d[k], dtype=float)
    return GridModel(name=d["name"], base_mva=float(d["base_mva"]), ppc=ppc,
                     bus_ids=np.array(d["bus_ids"], dtype=np.int64),
                     flow_limit=d.get("flow_limit", "current"))
