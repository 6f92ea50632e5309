"""Tiny synthetic datasets on real grids (case9, case14) with a known labelling rule.

Features come from the real grids through `gridtune.grids.features.to_graph`; labels follow a
rule a model can learn (and a system-aggregate baseline only partly): a scenario is infeasible
when its load scale exceeds a critical scale that depends on which branch is out. Feasible
scenarios get an OPF-like solution: generation shared in proportion to capacity (plus 2% losses),
voltages and angles that move with load; the "DC-OPF" shares load without losses.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from gridtune.grids.features import to_graph
from gridtune.grids.labels import Label
from gridtune.grids.model import GridModel, grid_from_net
from gridtune.grids.scenarios import Scenario


@functools.lru_cache(maxsize=4)
def grid(name: str) -> GridModel:
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grid_from_net(getattr(pn, name)(), name)


def critical_scale(g: GridModel, outage: int | None) -> float:
    if outage is None:
        return 1.2
    return 0.8 + 0.6 * ((outage * 7919) % g.n_branch) / g.n_branch  # topology-dependent


def make_label(g: GridModel, sc: Scenario, status: str) -> Label:
    if status != "feasible":
        return Label(status=status, certificate="synthetic")
    pmax = g.max_p_mw
    share = pmax / pmax.sum()
    total = sc.pd_mw.sum()
    pg = 1.02 * total * share
    qg = sc.qd_mvar.sum() * share
    va = -np.deg2rad(5.0) * sc.load_scale * np.arange(g.n_bus) / g.n_bus
    vm = 1.04 - 0.03 * sc.load_scale * (g.bus_type == 1)
    cost = g.gen_cost()
    objective = float(np.sum(cost[:, 0] * pg ** 2 + cost[:, 1] * pg + cost[:, 2]))
    dc_pg = total * share
    return Label(status="feasible", certificate="synthetic", objective=objective, pg_mw=pg, qg_mvar=qg,
                 vm_pu=vm, va_degree=np.rad2deg(va), dc_status="optimal",
                 dc_objective=float(np.sum(cost[:, 0] * dc_pg ** 2 + cost[:, 1] * dc_pg + cost[:, 2])),
                 dc_pg_mw=dc_pg, dc_va_degree=np.rad2deg(0.9 * va), solve_time_s=0.5)


def scenarios_and_labels(name: str = "case14", n: int = 40, seed: int = 0, unknown_share: float = 0.0,
                         scale: tuple[float, float] = (0.6, 1.6)) -> list[tuple[Scenario, Label | None]]:
    g = grid(name)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = float(rng.uniform(*scale))
        outage = int(rng.integers(g.n_branch)) if rng.random() < 0.5 else None
        noise = 1 + 0.03 * rng.standard_normal(g.n_bus)
        sc = Scenario(i, s, g.pd_mw * s * noise, g.qd_mvar * s * noise,
                      branch_out=() if outage is None else (outage,))
        status = "infeasible" if s > critical_scale(g, outage) else "feasible"
        if rng.random() < unknown_share:
            status = "unknown"
        out.append((sc, make_label(g, sc, status)))
    return out


def write_dataset(directory, name: str = "case14", n: int = 40, seed: int = 0) -> None:
    """A dataset directory in the layout `gridtune.grids.dataset.GridDataset` reads, from synthetic labels."""
    import json
    from pathlib import Path

    import pandas as pd

    from gridtune.grids import storage
    from gridtune.grids.features import SCHEMA_VERSION
    from gridtune.grids.model import grid_to_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([storage.scenario_row(sc, lb) for sc, lb in scenarios_and_labels(name, n, seed)])
    df.to_parquet(directory / "scenarios.parquet", index=False)
    (directory / "grid.json").write_text(json.dumps({"grid": grid_to_dict(grid(name))}))
    (directory / "manifest.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "samples": n, "content_hash": storage.content_hash(df)}))


def graphs(name: str = "case14", n: int = 40, seed: int = 0, unknown_share: float = 0.0,
           scale: tuple[float, float] = (0.6, 1.6), labelled: bool = True) -> list:
    g = grid(name)
    return [to_graph(g, sc, label if labelled else None)
            for sc, label in scenarios_and_labels(name, n, seed, unknown_share, scale)]


def pretrain(data, *, task: str, out_dir, epochs: int = 200, hidden: int = 64, layers: int = 4,
             seed: int = 0, batch_size: int = 64, patience: int = 20, lr_schedule=None,
             **fields) -> dict:
    """`gridtune.pretrain` with the model and training settings spelt out, returning the JSON dict
    it writes (`metrics.json`)."""
    import gridtune

    return gridtune.pretrain(
        data, out_dir, task=task, model=gridtune.ModelConfig(hidden=hidden, layers=layers),
        train=gridtune.TrainConfig(epochs=epochs, seed=seed, batch_size=batch_size,
                                   patience=patience, lr_schedule=lr_schedule),
        **fields).to_dict()


def tiny_checkpoint(out_dir, task: str = "feasibility", name: str = "case14", n: int = 60,
                    epochs: int = 3, seed: int = 0):
    """Train a tiny model on synthetic data and write its checkpoint; returns the metrics."""
    return pretrain(graphs(name, n, seed=seed), task=task, out_dir=out_dir, epochs=epochs,
                    hidden=16, layers=2, seed=seed, batch_size=16)
