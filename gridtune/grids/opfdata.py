"""OPFData interop: write a dataset as OPFData JSON, and read OPFData JSON into a dataset.

OPFData (Lovett et al. 2024, "OPFData: Large-scale datasets for AC optimal power flow with
topological perturbations", arXiv:2406.07234) stores one solved AC-OPF per JSON file, values per
unit on the system base, in the PowerModels convention (angles in radians, costs per p.u. power).
`torch_geometric.datasets.OPFDataset` reads it from

    ROOT/<release>/<case>/raw/<case>_<g>.tar.gz          one archive per group (download check)
    ROOT/<release>/<case>/raw/gridopt-dataset-tmp/<release>/<case>/group_<g>/example_<i>.json

and assigns example `i` to train (i < 13500 G), validation (i < 14250 G) or test, G groups.
`export_opfdata` writes exactly that layout (the archives are empty placeholders, so the class
never downloads), placing gridtune's own train / validation / test split on those index ranges.

OPFData holds solved examples only. Scenarios without an AC-OPF solution (infeasible, unknown,
error, or feasible with a recovered point only) travel beside it, outside the folders the class
reads: `raw/gridtune/statuses.csv` lists every scenario with its status and example index, and
`raw/gridtune/unsolved/scenario_<id>.json` holds the grid part of each unsolved one.
`import_opfdata` reads both (the side files when present) back into a dataset directory.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gridtune.errors import DataError

# Column order of each OPFData table (the dataset's README; torch_geometric's OPFDataset keeps it).
BUS_COLUMNS = ("base_kv", "bus_type", "vmin", "vmax")
GENERATOR_COLUMNS = ("mbase", "pg", "pmin", "pmax", "qg", "qmin", "qmax", "vg",
                     "cost_squared", "cost_linear", "cost_offset")
LOAD_COLUMNS = ("pd", "qd")
SHUNT_COLUMNS = ("bs", "gs")
AC_LINE_COLUMNS = ("angmin", "angmax", "b_fr", "b_to", "br_r", "br_x", "rate_a", "rate_b", "rate_c")
TRANSFORMER_COLUMNS = ("angmin", "angmax", "br_r", "br_x", "rate_a", "rate_b", "rate_c", "tap",
                       "shift", "b_fr", "b_to")
SOLUTION_BUS_COLUMNS = ("va", "vm")
SOLUTION_GENERATOR_COLUMNS = ("pg", "qg")
SOLUTION_BRANCH_COLUMNS = ("pt", "qt", "pf", "qf")

EXAMPLES_PER_GROUP = 15_000          # OPFDataset's split limits are fractions of this per group
TRAIN_SHARE, VAL_SHARE = 0.9, 0.05
RELEASE, RELEASE_OUTAGES = "dataset_release_1", "dataset_release_1_nminusone"
SIDE_DIR = "gridtune"                # beside the group folders, inside raw/
STATUS_FIELDS = ("scenario_id", "status", "certificate", "split", "example")
SPLIT_NAMES = ("train", "val", "test")


def split_starts(groups: int) -> tuple[int, int, int]:
    """First example index of train, validation and test in `OPFDataset` with `groups` groups."""
    train_limit = int(EXAMPLES_PER_GROUP * groups * TRAIN_SHARE)
    return 0, train_limit, train_limit + int(EXAMPLES_PER_GROUP * groups * VAL_SHARE)


def groups_needed(n_train: int, n_val: int) -> int:
    """Fewest groups whose train and validation index ranges hold `n_train` and `n_val` examples."""
    g = 1
    while True:
        s = split_starts(g)
        if n_train <= s[1] and n_val <= s[2] - s[1]:
            return g
        g += 1


# ---- export -------------------------------------------------------------------------------------

def example_json(grid: Any, scenario: Any, label: Any | None) -> dict[str, Any]:
    """One OPFData example (the `grid` part, plus `solution` and `metadata` when `label` holds an
    AC-OPF solution). Out-of-service branches and generators are left out, as OPFData does."""
    from pandapower.pypower.idx_brch import RATE_B, RATE_C
    from pandapower.pypower.idx_gen import MBASE, PG, QG

    base = grid.base_mva
    gen_on = grid.gen_in_service.copy()
    gen_on[list(scenario.gen_out)] = False
    br_on = grid.branch_in_service.copy()
    br_on[list(scenario.branch_out)] = False
    gens = np.flatnonzero(gen_on)
    cost = grid.gen_cost()
    if scenario.cost_scale is not None:
        cost = cost * np.asarray(scenario.cost_scale)[:, None]
    g = grid.ppc["gen"]
    mbase = np.where(np.isfinite(g[:, MBASE]) & (g[:, MBASE] > 0), g[:, MBASE], base)  # MATPOWER's default
    gen_rows = np.column_stack([
        mbase[gens], g[gens, PG] / base, grid.min_p_mw[gens] / base, grid.max_p_mw[gens] / base,
        g[gens, QG] / base, grid.min_q_mvar[gens] / base, grid.max_q_mvar[gens] / base,
        grid.vg_pu[gens], cost[gens, 0] * base**2, cost[gens, 1] * base, cost[gens, 2]])
    pd_mw, qd_mvar = np.asarray(scenario.pd_mw, float), np.asarray(scenario.qd_mvar, float)
    loads = np.flatnonzero((pd_mw != 0) | (qd_mvar != 0))
    shunts = np.flatnonzero((grid.gs_mw != 0) | (grid.bs_mvar != 0))
    bus_rows = np.column_stack([grid.base_kv, grid.bus_type, grid.min_vm_pu, grid.max_vm_pu])
    angmin, angmax = np.deg2rad(grid.min_angle_degree), np.deg2rad(grid.max_angle_degree)
    rates = np.column_stack([grid.rate_a_mva, grid.ppc["branch"][:, RATE_B].real,
                             grid.ppc["branch"][:, RATE_C].real]) / base
    half_b = grid.b_pu / 2
    lines = np.flatnonzero(br_on & ~grid.is_transformer)
    trafos = np.flatnonzero(br_on & grid.is_transformer)
    line_rows = np.column_stack([angmin, angmax, half_b, half_b, grid.r_pu, grid.x_pu, rates])
    trafo_rows = np.column_stack([angmin, angmax, grid.r_pu, grid.x_pu, rates, grid.tap_ratio,
                                  np.deg2rad(grid.shift_degree), half_b, half_b])
    f, t = grid.f_bus, grid.t_bus

    def edges(idx: np.ndarray, rows: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = {"senders": f[idx].tolist(), "receivers": t[idx].tolist()}
        if rows is not None:
            out["features"] = rows[idx].tolist()
        return out

    def link(n: int, buses: np.ndarray) -> dict[str, Any]:
        return {"senders": list(range(n)), "receivers": buses.tolist()}

    out: dict[str, Any] = {"grid": {
        "context": [[[float(base)]]],
        "nodes": {"bus": bus_rows.tolist(), "generator": gen_rows.tolist(),
                  "load": (np.column_stack([pd_mw, qd_mvar])[loads] / base).tolist(),
                  "shunt": (np.column_stack([grid.bs_mvar, grid.gs_mw])[shunts] / base).tolist()},
        "edges": {"ac_line": edges(lines, line_rows), "transformer": edges(trafos, trafo_rows),
                  "generator_link": link(len(gens), grid.gen_bus[gens]),
                  "load_link": link(len(loads), loads), "shunt_link": link(len(shunts), shunts)},
    }}
    if label is None or label.vm_pu is None or label.objective is None:
        return out
    p_from, q_from, p_to, q_to = _branch_flows_pu(grid, scenario, label)
    flow = np.column_stack([p_to, q_to, p_from, q_from])  # SOLUTION_BRANCH_COLUMNS
    out["solution"] = {
        "nodes": {"bus": np.column_stack([np.deg2rad(label.va_degree), label.vm_pu]).tolist(),
                  "generator": (np.column_stack([label.pg_mw, label.qg_mvar])[gens] / base).tolist()},
        "edges": {"ac_line": edges(lines, flow), "transformer": edges(trafos, flow)},
    }
    out["metadata"] = {"objective": float(label.objective)}
    return out


def _branch_flows_pu(grid: Any, scenario: Any, label: Any) -> tuple[np.ndarray, ...]:
    """(p_from, q_from, p_to, q_to) per branch, p.u., from the solved voltages (0 when out)."""
    import torch

    from gridtune.grids.features import to_graph
    from gridtune.grids.physics import branch_flows

    g = to_graph(grid, scenario, None)
    d = torch.float64
    vm = torch.tensor(np.array(label.vm_pu, dtype=float), dtype=d)
    va = torch.as_tensor(np.deg2rad(np.asarray(label.va_degree, float)), dtype=d)
    s_f, s_t, keep = branch_flows(vm, va, g.edge_index, g.edge_attr.to(d))
    rows = np.flatnonzero(keep.numpy())  # forward rows come first: row k is branch k
    out = np.zeros((4, grid.n_branch))
    out[0, rows], out[1, rows] = s_f.real.numpy(), s_f.imag.numpy()
    out[2, rows], out[3, rows] = s_t.real.numpy(), s_t.imag.numpy()
    return out[0], out[1], out[2], out[3]


def export_opfdata(directory: str | Path, out: str | Path, *, case_name: str | None = None,
                   split_seed: int = 0, fractions: tuple[float, float, float] | None = None
                   ) -> dict[str, Any]:
    """Write the dataset in `directory` as OPFData JSON under `out`; returns the export summary.

    Args:
        directory: a built dataset directory.
        out: the `root` to give `OPFDataset` (created; must be empty or new).
        case_name: `OPFDataset(case_name=...)` (default: `gridtune_<grid name>`).
        split_seed, fractions: gridtune's split (`gridtune.grids.split.split_indices`) placed on
            `OPFDataset`'s index ranges (default: seed 0 and the default fractions, as `pretrain`).
    """
    import pandas as pd

    from gridtune.files import atomic_write_text
    from gridtune.grids.model import grid_from_dict
    from gridtune.grids.split import SPLIT_FRACTIONS, split_indices
    from gridtune.grids.storage import read_manifest, row_to_label, row_to_scenario

    directory, out = Path(directory), Path(out)
    manifest = read_manifest(directory)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output directory `{out}` is not empty; choose an empty or new directory")
    grid = grid_from_dict(json.loads((directory / "grid.json").read_text())["grid"])
    frame = pd.read_parquet(directory / "scenarios.parquet")
    statuses = frame["status"].to_numpy().astype(str)
    case_name = case_name or f"gridtune_{grid.name}"
    parts = split_indices(statuses, split_seed, fractions or SPLIT_FRACTIONS)
    split_of = np.empty(len(frame), dtype=np.int64)
    for k, idx in enumerate(parts):
        split_of[idx] = k
    rows = frame.to_dict("records")
    solved = np.array([r["status"] == "feasible" and r["vm_pu"] is not None
                       and r["objective"] is not None and not _isnan(r["objective"]) for r in rows])
    counts = [int(np.sum(solved & (split_of == k))) for k in range(3)]
    if min(counts) == 0:
        raise DataError(f"dataset `{directory}` has solved scenarios train / val / test "
                        f"`{counts[0]} / {counts[1]} / {counts[2]}`; OPFDataset needs at least one in "
                        "each split: build more scenarios (or a recipe with `[labels] solutions = true`)")
    groups = groups_needed(counts[0], counts[1])
    starts = split_starts(groups)
    outaged = any(len(r["outages"]) or len(r["gen_outages"]) for r, s in zip(rows, solved) if s)
    release = RELEASE_OUTAGES if outaged else RELEASE
    raw = out / release / case_name / "raw"
    examples = raw / "gridopt-dataset-tmp" / release / case_name
    side = raw / SIDE_DIR
    (side / "unsolved").mkdir(parents=True)
    for g in range(groups):
        (examples / f"group_{g}").mkdir(parents=True)
        _placeholder_archive(raw / f"{case_name}_{g}.tar.gz")
    next_index = list(starts)
    status_rows = []
    for i, row in enumerate(rows):
        scenario, label = row_to_scenario(row), row_to_label(row)
        k = int(split_of[i])
        example = None
        obj = example_json(grid, scenario, label if solved[i] else None)
        obj.setdefault("metadata", {}).update(
            {"gridtune": {"scenario_id": scenario.scenario_id, "status": label.status,
                          "certificate": label.certificate, "split": SPLIT_NAMES[k],
                          "load_scale": scenario.load_scale, "hour": scenario.hour}})
        if solved[i]:
            example = next_index[k]
            next_index[k] += 1
            group = min(example // EXAMPLES_PER_GROUP, groups - 1)
            path = examples / f"group_{group}" / f"example_{example}.json"
        else:
            path = side / "unsolved" / f"scenario_{scenario.scenario_id}.json"
        path.write_text(json.dumps(obj))
        status_rows.append({"scenario_id": scenario.scenario_id, "status": label.status,
                            "certificate": label.certificate, "split": SPLIT_NAMES[k],
                            "example": "" if example is None else example})
    with (side / "statuses.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=STATUS_FIELDS)
        writer.writeheader()
        writer.writerows(status_rows)
    summary = {"root": str(out), "case_name": case_name, "release": release,
               "topological_perturbations": outaged, "num_groups": groups,
               "examples": dict(zip(SPLIT_NAMES, counts)), "unsolved": int((~solved).sum()),
               "statuses": {s: int(np.sum(statuses == s)) for s in sorted(set(statuses))},
               "split_seed": split_seed, "fractions": list(fractions or SPLIT_FRACTIONS),
               "source": str(directory), "content_hash": manifest["content_hash"], "grid": grid.name}
    atomic_write_text(side / "export.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _placeholder_archive(path: Path) -> None:
    """An empty, valid .tar.gz: `OPFDataset` only checks that the group's archive exists."""
    import tarfile

    with tarfile.open(path, "w:gz"):
        pass


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# ---- import -------------------------------------------------------------------------------------

def _table(obj: dict[str, Any], path: Path, *keys: str, width: int | None = None) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise DataError(f"OPFData file `{path}` has no `{'/'.join(keys)}`; an OPFData example "
                            "holds `grid`, `solution` and `metadata` (see docs/data.md)")
        cur = cur[k]
    if width is None:
        return cur
    arr = np.asarray(cur, dtype=float)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise DataError(f"OPFData file `{path}`: `{'/'.join(keys)}` has shape `{list(arr.shape)}`, "
                        f"expected `[n, {width}]`")
    return arr


class _Example:
    """One OPFData file, parsed into arrays (per unit, as stored)."""

    def __init__(self, path: Path, obj: dict[str, Any], solved: bool) -> None:
        self.path = path
        nodes, edges = ("grid", "nodes"), ("grid", "edges")
        self.base = float(np.asarray(_table(obj, path, "grid", "context"), dtype=float).reshape(-1)[0])
        self.bus = _table(obj, path, *nodes, "bus", width=len(BUS_COLUMNS))
        self.gen = _table(obj, path, *nodes, "generator", width=len(GENERATOR_COLUMNS))
        self.load = _table(obj, path, *nodes, "load", width=len(LOAD_COLUMNS))
        self.shunt = _table(obj, path, *nodes, "shunt", width=len(SHUNT_COLUMNS))
        self.gen_bus = np.asarray(_table(obj, path, *edges, "generator_link", "receivers"), dtype=int)
        self.load_bus = np.asarray(_table(obj, path, *edges, "load_link", "receivers"), dtype=int)
        self.shunt_bus = np.asarray(_table(obj, path, *edges, "shunt_link", "receivers"), dtype=int)
        line = _table(obj, path, *edges, "ac_line", "features", width=len(AC_LINE_COLUMNS))
        trafo = _table(obj, path, *edges, "transformer", "features", width=len(TRANSFORMER_COLUMNS))
        # one branch table: r, x, b, rate a/b/c, tap, shift (rad), angmin, angmax (rad)
        br_line = np.column_stack([line[:, 4], line[:, 5], line[:, 2] + line[:, 3], line[:, 6:9],
                                   np.ones(len(line)), np.zeros(len(line)), line[:, 0], line[:, 1]])
        br_trafo = np.column_stack([trafo[:, 2], trafo[:, 3], trafo[:, 9] + trafo[:, 10],
                                    trafo[:, 4:7], trafo[:, 7], trafo[:, 8], trafo[:, 0], trafo[:, 1]])
        for name, rows, fr, to in (("ac_line", line, 2, 3), ("transformer", trafo, 9, 10)):
            if len(rows) and not np.allclose(rows[:, fr], rows[:, to], rtol=1e-6, atol=1e-9):
                raise DataError(f"OPFData file `{path}`: `{name}` has b_fr != b_to; gridtune's branch "
                                "model splits line charging equally between the two ends")
        self.branch = np.concatenate([br_line, br_trafo]).reshape(-1, 10)
        self.is_trafo = np.r_[np.zeros(len(line), bool), np.ones(len(trafo), bool)]
        ends = [np.asarray(_table(obj, path, *edges, k, e), dtype=int)
                for k in ("ac_line", "transformer") for e in ("senders", "receivers")]
        self.f_bus, self.t_bus = np.r_[ends[0], ends[2]].astype(int), np.r_[ends[1], ends[3]].astype(int)
        meta = obj.get("metadata", {}) if isinstance(obj.get("metadata"), dict) else {}
        self.extra = meta.get("gridtune", {}) if isinstance(meta.get("gridtune"), dict) else {}
        self.solved = solved
        if solved:
            self.objective = float(_table(obj, path, "metadata", "objective"))
            self.sol_bus = _table(obj, path, "solution", "nodes", "bus", width=len(SOLUTION_BUS_COLUMNS))
            self.sol_gen = _table(obj, path, "solution", "nodes", "generator",
                                  width=len(SOLUTION_GENERATOR_COLUMNS))
            flows = [_table(obj, path, "solution", "edges", k, "features",
                            width=len(SOLUTION_BRANCH_COLUMNS)) for k in ("ac_line", "transformer")]
            self.sol_branch = np.concatenate(flows).reshape(-1, 4)

    def branch_keys(self) -> list[tuple]:
        return [(bool(k), int(f), int(t), *np.round(b[:3], 9)) for k, f, t, b
                in zip(self.is_trafo, self.f_bus, self.t_bus, self.branch)]

    def gen_keys(self) -> list[tuple]:
        return [(int(b), *np.round(g[[2, 3, 5, 6]], 9)) for b, g in zip(self.gen_bus, self.gen)]


def _match(keys: list[tuple], base_keys: list[tuple], what: str, path: Path) -> np.ndarray:
    """Index into the base element list of each element (parallel duplicates matched in order)."""
    free: dict[tuple, list[int]] = {}
    for i, k in enumerate(base_keys):
        free.setdefault(k, []).append(i)
    out = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        if not free.get(k):
            raise DataError(f"OPFData file `{path}` has a {what} (`{k[:3]}`) that the grid of the "
                            "other examples lacks; import the examples of one grid at a time")
        out[i] = free[k].pop(0)
    return out


def _read_examples(src: Path) -> list[_Example]:
    files = sorted((p for p in src.rglob("example_*.json") if SIDE_DIR not in p.parent.parts[-2:]),
                   key=lambda p: (p.parent.name, _index(p)))
    unsolved = sorted(src.rglob(f"{SIDE_DIR}/unsolved/scenario_*.json"), key=_index)
    if not files:
        raise DataError(f"`{src}` holds no OPFData examples (`group_<g>/example_<i>.json`); give an "
                        "OPFData root, release or group folder")
    out = []
    for path, solved in [(p, True) for p in files] + [(p, False) for p in unsolved]:
        try:
            obj = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"OPFData file `{path}` is not JSON: {exc}") from exc
        out.append(_Example(path, obj, solved))
    return out


def _index(p: Path) -> int:
    try:
        return int(p.stem.split("_")[-1])
    except ValueError:
        return -1


def _grid_from_example(ex: _Example, name: str, pd_mw: np.ndarray, qd_mvar: np.ndarray) -> Any:
    """A `GridModel` (MATPOWER columns) holding every element of `ex`."""
    from pandapower.pypower import idx_brch as B
    from pandapower.pypower import idx_bus as U
    from pandapower.pypower import idx_gen as G

    from gridtune.grids.model import GridModel

    base, n = ex.base, len(ex.bus)
    bus = np.zeros((n, 18))
    bus[:, U.BUS_I] = np.arange(n)
    bus[:, U.BUS_TYPE], bus[:, U.BASE_KV] = ex.bus[:, 1], ex.bus[:, 0]
    bus[:, U.VMIN], bus[:, U.VMAX] = ex.bus[:, 2], ex.bus[:, 3]
    bus[:, U.PD], bus[:, U.QD] = pd_mw, qd_mvar
    np.add.at(bus[:, U.BS], ex.shunt_bus, ex.shunt[:, 0] * base)
    np.add.at(bus[:, U.GS], ex.shunt_bus, ex.shunt[:, 1] * base)
    bus[:, U.VM], bus[:, U.BUS_AREA], bus[:, U.ZONE] = 1.0, 1.0, 1.0
    gen = np.zeros((len(ex.gen), 26))
    gen[:, G.GEN_BUS], gen[:, G.MBASE], gen[:, G.GEN_STATUS] = ex.gen_bus, ex.gen[:, 0], 1.0
    gen[:, G.PG], gen[:, G.QG], gen[:, G.VG] = ex.gen[:, 1] * base, ex.gen[:, 4] * base, ex.gen[:, 7]
    gen[:, G.PMIN], gen[:, G.PMAX] = ex.gen[:, 2] * base, ex.gen[:, 3] * base
    gen[:, G.QMIN], gen[:, G.QMAX] = ex.gen[:, 5] * base, ex.gen[:, 6] * base
    gencost = np.zeros((len(ex.gen), 7))
    gencost[:, 0], gencost[:, 3] = 2, 3
    gencost[:, 4:] = ex.gen[:, 8:11] / np.array([base**2, base, 1.0])
    br = ex.branch
    branch = np.zeros((len(br), 26))
    branch[:, B.F_BUS], branch[:, B.T_BUS] = ex.f_bus, ex.t_bus
    branch[:, B.BR_R], branch[:, B.BR_X], branch[:, B.BR_B] = br[:, 0], br[:, 1], br[:, 2]
    branch[:, B.RATE_A], branch[:, B.RATE_B], branch[:, B.RATE_C] = (br[:, 3:6] * base).T
    branch[:, B.TAP] = np.where(ex.is_trafo, br[:, 6], 0.0)
    branch[:, B.SHIFT] = np.rad2deg(br[:, 7])
    branch[:, B.ANGMIN], branch[:, B.ANGMAX] = np.rad2deg(br[:, 8]), np.rad2deg(br[:, 9])
    branch[:, B.BR_STATUS] = 1.0
    ppc = {"baseMVA": base, "bus": bus, "gen": gen, "branch": branch, "gencost": gencost}
    return GridModel(name=name, base_mva=base, ppc=ppc, bus_ids=np.arange(n, dtype=np.int64))


def import_opfdata(src: str | Path, out: str | Path, *, name: str | None = None) -> Path:
    """Read OPFData JSON under `src` into a gridtune dataset directory `out`; returns `out`.

    Every example must come from one grid (examples may lack branches or generators: those are
    the example's outages). Solved examples become `feasible` scenarios carrying their OPF
    solution and objective; gridtune's side files (`raw/gridtune/`), when present, bring back the
    unsolved scenarios with their statuses and the original scenario ids.
    """
    import datetime as dt

    import pandas as pd

    from gridtune import __version__
    from gridtune.grids import storage
    from gridtune.grids.features import SCHEMA_VERSION
    from gridtune.grids.labels import Label
    from gridtune.grids.model import grid_hash, grid_to_dict
    from gridtune.grids.scenarios import Scenario
    from gridtune.grids.summary import summarize

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"OPFData source `{src}` is not a directory")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output directory `{out}` is not empty; choose an empty or new directory")
    examples = _read_examples(src)
    ref = max(examples, key=lambda e: (len(e.branch) + len(e.gen), -examples.index(e)))
    n_bus = len(ref.bus)
    if any(len(e.bus) != n_bus or e.base != ref.base for e in examples):
        bad = next(e for e in examples if len(e.bus) != n_bus or e.base != ref.base)
        raise DataError(f"OPFData file `{bad.path}` has `{len(bad.bus)}` buses on a `{bad.base}` MVA "
                        f"base, `{ref.path}` has `{n_bus}` on `{ref.base}`; import one grid at a time")
    base = ref.base
    loads = []
    for e in examples:
        pq = np.zeros((n_bus, 2))
        np.add.at(pq, e.load_bus, e.load * base)
        loads.append(pq)
    nominal = np.mean(loads, axis=0)
    grid_name = name or next((p for p in ref.path.parts if p.startswith("pglib") or p.startswith("gridtune_")),
                             src.name)
    grid = _grid_from_example(ref, grid_name, nominal[:, 0], nominal[:, 1])
    base_cost = grid.gen_cost()
    rows = []
    ids = [e.extra.get("scenario_id") for e in examples]
    keep_ids = all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    for k, (e, pq) in enumerate(zip(examples, loads)):
        br = _match(e.branch_keys(), ref.branch_keys(), "branch", e.path)
        gm = _match(e.gen_keys(), ref.gen_keys(), "generator", e.path)
        cost_scale = _cost_scale(base_cost, e.gen[:, 8:11] / np.array([base**2, base, 1.0]), gm, e.path)
        total = nominal[:, 0].sum()
        scale = e.extra.get("load_scale", pq[:, 0].sum() / total if total else 1.0)
        scenario = Scenario(scenario_id=int(ids[k]) if keep_ids else k, load_scale=float(scale),
                            pd_mw=pq[:, 0], qd_mvar=pq[:, 1],
                            branch_out=tuple(sorted(set(range(grid.n_branch)) - set(br.tolist()))),
                            gen_out=tuple(sorted(set(range(grid.n_gen)) - set(gm.tolist()))),
                            cost_scale=cost_scale, hour=e.extra.get("hour"))
        rows.append(storage.scenario_row(scenario, _label(e, grid, br, gm) if e.solved else Label(
            status=e.extra.get("status", "unknown"), certificate=e.extra.get("certificate", "opfdata"),
            solve_time_s=math.nan)))
    df = pd.DataFrame(rows).sort_values("scenario_id").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    storage.write_json(out / "grid.json", {"grid": grid_to_dict(grid), "rating": {"rerated": False},
                                           "grid_hash": grid_hash(grid)})
    df.to_parquet(out / "scenarios.parquet", index=False)
    manifest = {
        "gridtune_version": __version__, "schema_version": SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recipe": None, "recipe_source": None,
        "source": {"format": "opfdata", "path": str(src), "examples": int(sum(e.solved for e in examples)),
                   "unsolved": int(sum(not e.solved for e in examples))},
        "cache_key": None, "content_hash": storage.content_hash(df),
        "grid": {"name": grid.name, "hash": grid_hash(grid), "buses": grid.n_bus,
                 "branches": grid.n_branch, "generators": grid.n_gen},
        "ratings": {"rerated": False}, "calibration": None,
        **summarize(df, grid),
    }
    storage.write_json(out / "manifest.json", manifest)
    return out


def _cost_scale(base_cost: np.ndarray, cost: np.ndarray, gm: np.ndarray, path: Path) -> np.ndarray | None:
    """Per-generator multiplier of the base cost polynomial, None when every cost is the base's."""
    ref = base_cost[gm]
    if np.allclose(cost, ref, rtol=1e-9, atol=1e-12):
        return None
    scale = np.ones(len(base_cost))
    for i, g in enumerate(gm):
        nz = np.abs(ref[i]) > 0
        s = cost[i, nz] / ref[i, nz] if nz.any() else np.array([1.0])
        if not np.allclose(s, s[0], rtol=1e-6) or not np.allclose(cost[i, ~nz], 0):
            raise DataError(f"OPFData file `{path}`: generator {i}'s cost is not a multiple of the "
                            "grid's cost polynomial; gridtune varies costs by one factor per generator")
        scale[g] = s[0]
    return scale


def _label(e: _Example, grid: Any, br: np.ndarray, gm: np.ndarray) -> Any:
    from gridtune.grids.labels import Label

    base = grid.base_mva
    pg, qg = np.zeros(grid.n_gen), np.zeros(grid.n_gen)
    pg[gm], qg[gm] = e.sol_gen[:, 0] * base, e.sol_gen[:, 1] * base
    flow = np.zeros(grid.n_branch)
    f = e.sol_branch
    flow[br] = np.maximum(np.hypot(f[:, 2], f[:, 3]), np.hypot(f[:, 0], f[:, 1])) * base
    return Label(status="feasible", certificate="opfdata", objective=e.objective, pg_mw=pg,
                 qg_mvar=qg, vm_pu=e.sol_bus[:, 1].copy(), va_degree=np.rad2deg(e.sol_bus[:, 0]),
                 branch_flow_mva=flow, solve_time_s=math.nan)
