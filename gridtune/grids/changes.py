"""Grid changes as data: a recipe's `[changes]` table derives a changed grid from its base grid.

An operator's grid changes: a line is built, a unit retires, load grows in one area. A recipe
states such changes next to its `case`, and every dataset built from it is labelled on the
changed grid:

    case = "case118"

    [[changes.add_branches]]          # a new line with the electrical data of line 41
    from_bus = 18
    to_bus = 33
    like = 41

    [[changes.remove_generators]]     # a retired unit
    gen = 10

    [[changes.scale_loads]]           # 20% load growth (Q follows P)
    buses = [32, 33, 34]
    factor = 1.2

Conventions. Every reference is a pandapower table index of the base grid (the net of
`gridtune.grids.cases.load_net(case)`): `bus`, `line`, `trafo`, `impedance` and `gen`. The
default cases number their buses by position (MATPOWER bus number - 1 where the case numbers
its buses 1..n; `net.bus.name` holds the MATPOWER number); a MATPOWER file's net keeps the
file's bus numbers. Units are pandapower's: ohm, nF and km for lines, kA for a line's
thermal current, MW / Mvar for generators, MVA for branch ratings, $/h for costs.

Order of application (fixed; the order of the entries inside one list is kept):
    1. remove_branches     branches taken out of service (gone from the grid's arrays)
    2. remove_generators   generators taken out of service (dropped from the OPF)
    3. add_branches        new lines, appended after the existing ones
    4. add_generators      new generators, appended after the existing ones
    5. scale_loads         P and Q of the loads at the selected buses multiplied
    6. connectivity check  no bus may lose its path to a slack (islands are refused)
    7. ratings             existing branches keep the base grid's ratings (re-rated ones when
                           the recipe sets `[limits] rating_factor`); a new line keeps its own
                           `max_i_ka`; a line added `like` another without one gets that line's
                           rating per circuit times its `parallel`, or, in a re-rated recipe,
                           the re-rating rule applied to it on the changed grid
    8. rerate_branches     ratings scaled or set

The steps 1-5 act on the pandapower net after it is loaded and repaired; 7 and 8 on the
grid arrays after the base grid's (optional) re-rating, so a re-rated recipe's changes meet
the ratings of the base grid: new lines relieve the re-rated corridors and load growth
loads them, instead of being absorbed by a re-rating of the changed grid.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from gridtune.errors import SpecError, choices_text
from gridtune.grids.regions import loaded_buses, zone_buses
from gridtune.specs import from_table

if TYPE_CHECKING:
    import numpy as np

    from gridtune.grids.model import GridModel
    from gridtune.grids.recipe import Recipe

BRANCH_TABLES = ("line", "trafo", "impedance")
"""pandapower tables a branch reference may name (`line = 7`, `trafo = 2`, `impedance = 0`)."""

Table = dict[str, Any]  # an operation as read from TOML, before it is parsed


def _positive(where: str, key: str, value: float | None, *, zero_ok: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise SpecError(f"{where}key `{key}` = `{value}` must be {bound}")


def _one_branch(op: Any) -> tuple[str, int]:
    """(`line` | `trafo` | `impedance`, index) of an operation naming exactly one branch."""
    given = [(t, getattr(op, t)) for t in BRANCH_TABLES if getattr(op, t) is not None]
    if len(given) != 1:
        raise SpecError(f"name exactly one branch with one of {choices_text(BRANCH_TABLES)}, "
                        f"got {len(given)}")
    return given[0]


@dataclasses.dataclass(frozen=True)
class AddBranch:
    """A new line between two buses of one voltage level.

    Either `like` (a line index: every electrical parameter and the rating are copied from
    it; parameters given here override the copy) or `r_ohm_per_km`, `x_ohm_per_km` and
    `max_i_ka` (with `c_nf_per_km` 0 and `length_km` 1 unless given). `parallel` circuits
    share the line's from/to buses (pandapower's `parallel`).
    """

    from_bus: int
    to_bus: int
    like: int | None = None
    r_ohm_per_km: float | None = None
    x_ohm_per_km: float | None = None
    c_nf_per_km: float | None = None
    length_km: float | None = None
    max_i_ka: float | None = None
    parallel: int = 1
    name: str | None = None

    def __post_init__(self) -> None:
        if self.from_bus == self.to_bus:
            raise SpecError(f"keys `from_bus` and `to_bus` are both `{self.from_bus}`; a line "
                            "joins two different buses")
        if self.like is None:
            missing = [k for k in ("r_ohm_per_km", "x_ohm_per_km", "max_i_ka") if getattr(self, k) is None]
            if missing:
                raise SpecError(f"missing key `{missing[0]}`; a new line needs `like = <line "
                                "index>` or `r_ohm_per_km`, `x_ohm_per_km` and `max_i_ka`")
        _positive("", "r_ohm_per_km", self.r_ohm_per_km, zero_ok=True)
        _positive("", "x_ohm_per_km", self.x_ohm_per_km)
        _positive("", "c_nf_per_km", self.c_nf_per_km, zero_ok=True)
        _positive("", "length_km", self.length_km)
        _positive("", "max_i_ka", self.max_i_ka)
        if self.parallel < 1:
            raise SpecError(f"key `parallel` = `{self.parallel}` must be at least 1")


@dataclasses.dataclass(frozen=True)
class RemoveBranch:
    """A branch taken out of service: `line = i`, `trafo = i` or `impedance = i`."""

    line: int | None = None
    trafo: int | None = None
    impedance: int | None = None

    def __post_init__(self) -> None:
        _one_branch(self)


@dataclasses.dataclass(frozen=True)
class RemoveGenerator:
    """A generator (`gen` table index) retired: out of service. The slack cannot retire."""

    gen: int


@dataclasses.dataclass(frozen=True)
class AddGenerator:
    """A new dispatchable generator at `bus`; cost c2 * P^2 + c1 * P + c0 in $/h (P in MW)."""

    bus: int
    max_p_mw: float
    min_q_mvar: float
    max_q_mvar: float
    c1: float
    min_p_mw: float = 0.0
    c2: float = 0.0
    c0: float = 0.0
    vm_pu: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_p_mw <= self.max_p_mw or self.max_p_mw <= 0:
            raise SpecError(f"keys `min_p_mw` = `{self.min_p_mw}`, `max_p_mw` = `{self.max_p_mw}` "
                            "must satisfy 0 <= min_p_mw <= max_p_mw, max_p_mw > 0")
        if self.min_q_mvar > self.max_q_mvar:
            raise SpecError(f"keys `min_q_mvar` = `{self.min_q_mvar}`, `max_q_mvar` = "
                            f"`{self.max_q_mvar}` must satisfy min_q_mvar <= max_q_mvar")
        if self.c2 < 0:
            raise SpecError(f"key `c2` = `{self.c2}` must be >= 0 (a convex cost)")
        if not 0.8 <= self.vm_pu <= 1.2:
            raise SpecError(f"key `vm_pu` = `{self.vm_pu}` must lie in [0.8, 1.2]")


@dataclasses.dataclass(frozen=True)
class RerateBranch:
    """A branch's thermal rating times `factor`, or set to `rate_mva` (0 = unlimited)."""

    line: int | None = None
    trafo: int | None = None
    impedance: int | None = None
    factor: float | None = None
    rate_mva: float | None = None

    def __post_init__(self) -> None:
        _one_branch(self)
        if (self.factor is None) == (self.rate_mva is None):
            raise SpecError("give exactly one of `factor` and `rate_mva`")
        _positive("", "factor", self.factor)
        _positive("", "rate_mva", self.rate_mva, zero_ok=True)


@dataclasses.dataclass(frozen=True)
class ScaleLoads:
    """P and Q of every load at the selected buses times `factor` (load growth when > 1).

    Buses are selected by `buses` (bus indices) or by `zone` (pandapower's `bus.zone`).
    """

    factor: float
    buses: tuple[int, ...] | None = None
    zone: int | str | None = None

    def __post_init__(self) -> None:
        if (self.buses is None) == (self.zone is None):
            raise SpecError("select the buses with exactly one of `buses` and `zone`")
        if self.buses is not None and not self.buses:
            raise SpecError("key `buses` is empty; list at least one bus")
        _positive("", "factor", self.factor)


OPERATIONS: dict[str, type] = {
    "remove_branches": RemoveBranch,
    "remove_generators": RemoveGenerator,
    "add_branches": AddBranch,
    "add_generators": AddGenerator,
    "scale_loads": ScaleLoads,
    "rerate_branches": RerateBranch,
}
"""The `[changes]` keys in their order of application (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class ChangesSpec:
    """The `[changes]` table of a recipe: lists of operations (tables), each list optional.

    Entries may be given as the operation dataclasses or as tables (as read from TOML); tables
    are parsed and validated here. A single table (TOML `[changes.scale_loads]`) is one entry.
    """

    remove_branches: tuple[RemoveBranch | Table, ...] | Table = ()
    remove_generators: tuple[RemoveGenerator | Table, ...] | Table = ()
    add_branches: tuple[AddBranch | Table, ...] | Table = ()
    add_generators: tuple[AddGenerator | Table, ...] | Table = ()
    scale_loads: tuple[ScaleLoads | Table, ...] | Table = ()
    rerate_branches: tuple[RerateBranch | Table, ...] | Table = ()

    def __post_init__(self) -> None:
        for key, cls in OPERATIONS.items():
            given = getattr(self, key)
            ops = []
            for i, op in enumerate((given,) if isinstance(given, dict) else given):
                where = f"{key} entry {i + 1}"
                if isinstance(op, dict):
                    op = from_table(cls, op, where=where)
                elif not isinstance(op, cls):
                    raise SpecError(f"{where}: expected a table, got `{op!r}`")
                ops.append(op)
            object.__setattr__(self, key, tuple(ops))
        for key in ("remove_branches", "remove_generators"):
            seen = set()
            for i, op in enumerate(getattr(self, key)):
                ref = _one_branch(op) if key == "remove_branches" else ("gen", op.gen)
                if ref in seen:
                    raise SpecError(f"{key} entry {i + 1}: `{ref[0]} {ref[1]}` is listed twice")
                seen.add(ref)

    def __bool__(self) -> bool:
        return any(getattr(self, key) for key in OPERATIONS)

    def to_table(self) -> dict[str, Any]:
        """Plain table (as in TOML, for recipe.json and the cache key): non-empty lists only."""
        out: dict[str, Any] = {}
        for key in OPERATIONS:
            ops = getattr(self, key)
            if ops:
                out[key] = [{k: list(v) if isinstance(v, tuple) else v
                             for k, v in dataclasses.asdict(op).items() if v is not None} for op in ops]
        return out


# ---- applying changes ---------------------------------------------------------------------------

def _index_text(index: Any) -> str:
    values = sorted(int(i) for i in index)
    if not values:
        return "none (the table is empty)"
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return f"{len(values)} indices in {values[0]}..{values[-1]}"


def _check_ref(net: Any, table: str, index: int, where: str, key: str, valid: Any = None) -> None:
    valid = net[table].index if valid is None else valid
    if index not in valid:
        kind = {"bus": "bus", "gen": "generator", "line": "line", "trafo": "transformer",
                "impedance": "impedance branch"}[table]
        raise SpecError(f"{where}: key `{key}` = `{index}` is not a {kind} of the base grid; "
                        f"valid `{table}` indices: {_index_text(valid)}")


def _check_bus(net: Any, bus: int, where: str, key: str) -> None:
    _check_ref(net, "bus", bus, where, key)
    if not bool(net.bus.at[bus, "in_service"]):
        raise SpecError(f"{where}: key `{key}` = `{bus}` is an out-of-service bus")


def _slack_connected(net: Any) -> set[int]:
    """In-service buses with a path to an in-service slack (ext_grid or slack gen)."""
    import networkx as nx
    import pandapower.topology as top

    graph = top.create_nxgraph(net, include_out_of_service=False)
    slacks = set(net.ext_grid.bus[net.ext_grid.in_service].astype(int))
    if "slack" in net.gen:
        slacks |= set(net.gen.bus[net.gen.in_service & net.gen.slack.fillna(False).astype(bool)].astype(int))
    out: set[int] = set()
    for s in slacks:
        if s in graph:
            out |= set(nx.node_connected_component(graph, s))
    return out


def apply_to_net(net: Any, changes: ChangesSpec, *, where: str = "[changes]") -> dict[str, Any]:
    """Steps 1-6 of the module docstring on `net` (in place); every reference is checked.

    Returns what the ratings step needs: for each added line, the line index it was copied
    from (or None) and whether its rating was given.
    """
    import pandapower as pp

    base_connected = _slack_connected(net)
    base_lines = net.line.index.copy()  # `like` names a line of the base grid, not a new one

    for i, op in enumerate(changes.remove_branches):
        table, idx = _one_branch(op)
        _check_ref(net, table, idx, f"{where} remove_branches entry {i + 1}", table)
        net[table].at[idx, "in_service"] = False

    for i, op in enumerate(changes.remove_generators):
        w = f"{where} remove_generators entry {i + 1}"
        _check_ref(net, "gen", op.gen, w, "gen")
        if "slack" in net.gen and bool(net.gen.at[op.gen, "slack"]):
            raise SpecError(f"{w}: key `gen` = `{op.gen}` is the slack generator; it cannot retire")
        net.gen.at[op.gen, "in_service"] = False

    added: list[dict[str, Any]] = []
    for i, op in enumerate(changes.add_branches):
        w = f"{where} add_branches entry {i + 1}"
        _check_bus(net, op.from_bus, w, "from_bus")
        _check_bus(net, op.to_bus, w, "to_bus")
        kv_f, kv_t = float(net.bus.at[op.from_bus, "vn_kv"]), float(net.bus.at[op.to_bus, "vn_kv"])
        if abs(kv_f - kv_t) > 1e-6 * max(kv_f, kv_t):
            raise SpecError(f"{w}: a line joins buses of one voltage level; bus `{op.from_bus}` is "
                            f"`{kv_f:g}` kV, bus `{op.to_bus}` is `{kv_t:g}` kV")
        params: dict[str, Any] = {"c_nf_per_km": 0.0, "length_km": 1.0, "g_us_per_km": 0.0,
                                  "df": 1.0, "max_loading_percent": 100.0}
        if op.like is not None:
            _check_ref(net, "line", op.like, w, "like", base_lines)
            row = net.line.loc[op.like]
            for k in ("r_ohm_per_km", "x_ohm_per_km", "c_nf_per_km", "g_us_per_km", "length_km",
                      "df", "max_loading_percent"):
                params[k] = float(row[k])
            params["max_i_ka"] = float(row["max_i_ka"]) / float(row["parallel"])  # per circuit
        for k in ("r_ohm_per_km", "x_ohm_per_km", "c_nf_per_km", "length_km", "max_i_ka"):
            if getattr(op, k) is not None:
                params[k] = getattr(op, k)
        # pandapower leaves the loading limit NaN by default, which its OPF reads as no limit
        if not params["max_loading_percent"] > 0:
            params["max_loading_percent"] = 100.0
        idx = pp.create_line_from_parameters(
            net, op.from_bus, op.to_bus, name=op.name, parallel=op.parallel, **params)
        added.append({"line": int(idx), "like": op.like, "rating_given": op.max_i_ka is not None,
                      "parallel": op.parallel})

    for i, op in enumerate(changes.add_generators):
        w = f"{where} add_generators entry {i + 1}"
        _check_bus(net, op.bus, w, "bus")
        g = pp.create_gen(net, op.bus, p_mw=op.min_p_mw, vm_pu=op.vm_pu, name=op.name,
                          min_p_mw=op.min_p_mw, max_p_mw=op.max_p_mw, min_q_mvar=op.min_q_mvar,
                          max_q_mvar=op.max_q_mvar, controllable=True)
        pp.create_poly_cost(net, g, "gen", cp1_eur_per_mw=op.c1, cp2_eur_per_mw2=op.c2, cp0_eur=op.c0)

    for i, op in enumerate(changes.scale_loads):
        w = f"{where} scale_loads entry {i + 1}"
        if op.buses is not None:
            for bus in op.buses:
                _check_bus(net, bus, w, "buses")
            buses = set(op.buses)
        else:
            buses = zone_buses(net, op.zone, w)
        loaded_buses(net, buses, w)  # a selection without load is refused
        loads = net.load.index[net.load.bus.isin(buses) & net.load.in_service]
        net.load.loc[loads, "p_mw"] *= op.factor
        net.load.loc[loads, "q_mvar"] *= op.factor

    lost = base_connected - _slack_connected(net)
    if lost:
        raise SpecError(_islanding_message(net, changes, sorted(int(b) for b in lost), where))
    return {"added_lines": added}


def _islanding_message(net: Any, changes: ChangesSpec, lost: list[int], where: str) -> str:
    """Name the removal that islands buses (or all removals when only together they do)."""
    culprits = []
    for op in changes.remove_branches:
        table, idx = _one_branch(op)
        net[table].at[idx, "in_service"] = True
        if len(set(lost) - _slack_connected(net)) < len(lost):  # putting it back reconnects some
            culprits.append(f"`{table} {idx}`")
        net[table].at[idx, "in_service"] = False
    named = ", ".join(culprits) if culprits else "the removed branches together"
    shown = lost if len(lost) <= 10 else lost[:10] + ["..."]
    return (f"{where} remove_branches: {named} disconnect{'s' if len(culprits) == 1 else ''} "
            f"bus{'es' if len(lost) > 1 else ''} `{shown}` from every slack; a change may not "
            "island part of the grid (keep the branch, or add one that reconnects them)")


def grid_branches(net: Any, n_branch: int) -> list[tuple[str, int]]:
    """`(table, index)` of each branch row of the grid built from `net` (after `grid_from_net`).

    The grid keeps the in-service branches of the `line`, `trafo` and `impedance` tables in
    pandapower's order; the count is checked against the grid's `n_branch`.
    """
    rows: list[tuple[str, int]] = []
    ranges = sorted(net._pd2ppc_lookups["branch"].items(), key=lambda kv: kv[1][0])
    bus_on = net.bus.in_service
    for table, _ in ranges:
        if table not in BRANCH_TABLES:
            raise SpecError(f"the grid has `{table}` branches; changes support grids whose branches "
                            f"are {choices_text(BRANCH_TABLES)}")
        df = net[table]
        ends = ("hv_bus", "lv_bus") if table == "trafo" else ("from_bus", "to_bus")
        on = df.in_service.astype(bool) & df[ends[0]].map(bus_on).astype(bool) \
            & df[ends[1]].map(bus_on).astype(bool)
        rows += [(table, int(i)) for i in df.index[on.to_numpy()]]
    if len(rows) != n_branch:
        raise SpecError(f"cannot match the grid's {n_branch} branches to the net's {len(rows)} "
                        "in-service branches; changes do not support this grid")
    return rows


def same_branches(grid: GridModel, other: GridModel) -> np.ndarray:
    """For each branch row of `grid`, the row of `other` holding the same branch
    (`model.pair_branches`: end buses by number, then reactance). The identity when the two list
    their branches alike (default cases); a MATPOWER file and pandapower's conversion of it list
    them in different orders."""
    import numpy as np
    from pandapower.pypower.idx_brch import BR_X, F_BUS, T_BUS

    from gridtune.grids.model import pair_branches

    def ends(g: GridModel) -> tuple[np.ndarray, np.ndarray]:
        br, ids = np.asarray(g.ppc["branch"]), np.asarray(g.bus_ids)
        return ids[br[:, [F_BUS, T_BUS]].astype(int)], br[:, BR_X]

    rows = pair_branches(*ends(grid), *ends(other))
    missing = np.flatnonzero(rows < 0)
    if missing.size:
        (f, t), x = ends(grid)[0][missing[0]], ends(grid)[1][missing[0]]
        raise ValueError(f"branch {f}-{t} (x {x:.6g}) has no counterpart in grid `{other.name}`")
    return rows


def changed_grid(case: str, changes: ChangesSpec, *, ratings: GridModel | None = None,
                 rerated: tuple[float, float] | None = None, name: str | None = None,
                 where: str = "[changes]") -> GridModel:
    """The grid of `case` with `changes` applied (steps 1-8 of the module docstring).

    Args:
        ratings: the base grid whose branch ratings the changed grid keeps (the re-rated base
            grid when the recipe re-rates); None keeps the case's own ratings.
        rerated: `(rating_factor, min_rating_mva)` when `ratings` were re-rated by that rule
            (`gridtune.grids.rating.rerate`): a line added `like` another without its own
            `max_i_ka` is then rated by the same rule on the changed grid, rating_factor x its
            flow at the changed grid's nominal AC-OPF (case ratings), at least min_rating_mva.
            Copying the like line's re-rated rating would tie a new line to a flow it never
            carried (a lightly loaded line's 5 MVA floor can make the whole grid infeasible).
        name: the changed grid's name (default `<case>_changed`).
        where: prefix of error messages (the recipe file and table).
    """
    import numpy as np
    from pandapower.pypower.idx_brch import RATE_A

    from gridtune.grids.cases import formulation, grid_name, load_grid, load_net
    from gridtune.grids.model import grid_from_net

    flow_limit = "current"
    if formulation(case) == "matpower":
        # The edits act on pandapower's conversion of the file, which keeps its data but not its
        # angle-difference limits: refuse those instead of dropping them; keep MATPOWER's
        # apparent-power branch limits on the changed grid.
        own = load_grid(case)  # every refusal of the file's content first
        if own.angle_limited.any():
            raise SpecError(f"{where}: `case` = `{case}` has angle-difference limits on "
                            f"{int(own.angle_limited.sum())} branches, which [changes] would lose "
                            "(it edits a pandapower net); valid: a MATPOWER case without them, a "
                            "default case or a pandapower `.json` net")
        flow_limit = own.flow_limit
    base_net = load_net(case)
    net = load_net(case)
    info = apply_to_net(net, changes, where=where)
    name = name or f"{grid_name(case)}_changed"
    base = dataclasses.replace(grid_from_net(base_net, grid_name(case)), flow_limit=flow_limit)
    grid = dataclasses.replace(grid_from_net(net, name), flow_limit=flow_limit)
    source = ratings if ratings is not None else base
    if source.n_branch != base.n_branch:
        raise ValueError(f"`ratings` has {source.n_branch} branches, the base grid {base.n_branch}")
    # `ratings` of a MATPOWER case list its branches in the file's order; the net lists lines,
    # then transformers and impedances: read each base branch's rating from its own row
    source_rate = source.rate_a_mva[same_branches(base, source)]
    base_row = {ref: k for k, ref in enumerate(grid_branches(base_net, base.n_branch))}
    row_of = {ref: k for k, ref in enumerate(grid_branches(net, grid.n_branch))}
    rate = grid.rate_a_mva
    for ref, k in row_of.items():
        if ref in base_row:  # an existing branch keeps its (possibly re-rated) base rating
            rate[k] = source_rate[base_row[ref]]
    copied = [new for new in info["added_lines"] if new["like"] is not None and not new["rating_given"]]
    if copied and rerated is not None and ratings is not None:
        from gridtune.grids.rating import rerate

        own, _ = rerate(grid, *rerated)  # the changed grid with the case's ratings
        for new in copied:
            k = row_of[("line", new["line"])]
            rate[k] = own.rate_a_mva[k]
    else:
        for new in copied:
            if ("line", new["like"]) in base_row:
                like_rate = source_rate[base_row[("line", new["like"])]]
                per_circuit = like_rate / float(base_net.line.at[new["like"], "parallel"])
                rate[row_of[("line", new["line"])]] = per_circuit * new["parallel"]
    for i, op in enumerate(changes.rerate_branches):
        w = f"{where} rerate_branches entry {i + 1}"
        table, idx = _one_branch(op)
        _check_ref(base_net, table, idx, w, table)
        if (table, idx) not in row_of:
            raise SpecError(f"{w}: `{table} {idx}` is out of service in the changed grid; only "
                            "branches in service have a rating")
        row = row_of[(table, idx)]
        if op.rate_mva is not None:
            rate[row] = op.rate_mva
        elif rate[row] <= 0:
            raise SpecError(f"{w}: `{table} {idx}` has no rating to scale (0 = unlimited); "
                            "set one with `rate_mva`")
        else:
            rate[row] *= op.factor
    ppc = dict(grid.ppc)
    ppc["branch"] = np.array(grid.ppc["branch"], copy=True)
    ppc["branch"][:, RATE_A] = rate
    return dataclasses.replace(grid, ppc=ppc)


def recipe_grid(recipe: Recipe, *, ratings: GridModel | None = None) -> GridModel:
    """The grid a recipe's dataset is labelled on, before any re-rating of the base grid: the
    case's grid, or the changed grid when the recipe has `[changes]` (`ratings`: see
    `changed_grid`)."""
    from gridtune.grids.cases import grid_name, load_grid

    if not recipe.changes:
        return ratings if ratings is not None else load_grid(recipe.case)
    from pathlib import Path

    name = Path(recipe.source).stem if recipe.source else f"{grid_name(recipe.case)}_changed"
    where = f"{recipe.source or 'recipe'} [changes]"
    limits = recipe.limits
    rerated = None if limits.rating_factor is None else (limits.rating_factor, limits.min_rating_mva)
    return changed_grid(recipe.case, recipe.changes, ratings=ratings, rerated=rerated, name=name,
                        where=where)
