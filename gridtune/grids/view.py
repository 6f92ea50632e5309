"""`DataView`: the graphs of one dataset with what training and evaluation need to know about it.

`resolve_data` turns whatever a user passes (recipe path, dataset directory, case name,
`GridDataset`, list of graphs) into a view, so every workflow reads data the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from gridtune.errors import CheckpointError, DataError
from gridtune.grids.features import BUS_FEATURES, SCHEMA_VERSION
from gridtune.grids.labels import STATUSES, TASKS

TASK_TARGETS = dict(zip(TASKS, ("y_infeasible", "y_opf", "y_cost"), strict=True))


@dataclasses.dataclass
class DataView:
    """The graphs of one dataset with what training and evaluation need to know about it.

    Attributes:
        graphs: PyG graphs of the feature schema.
        name: dataset / grid name (for messages and reports).
        content_hash: identifies the labelled data (checkpoints record it).
        statuses: label status per graph (`feasible`, `infeasible`, `unknown`, `error`).
        solve_time_s: solver wall time per scenario, when known (for speed-up figures).
        schema_version: feature schema of the data.
    """

    graphs: list[Data]
    name: str
    content_hash: str
    statuses: np.ndarray
    solve_time_s: np.ndarray | None = None
    schema_version: str = SCHEMA_VERSION


def _hash_graphs(graphs: Sequence[Data]) -> str:
    h = hashlib.sha256()
    for g in graphs:
        for key in ("x", "edge_attr", "y_infeasible", "y_opf"):
            if hasattr(g, key):
                h.update(g[key].numpy().tobytes())
    return h.hexdigest()[:16]


def resolve_data(data: Any, *, samples: int | None = None, workers: int | None = None,
                 backend: str = "local", progress: bool = False) -> DataView:
    """A `DataView` from a recipe / dataset directory / case name, a `GridDataset`, or a list of graphs."""
    if isinstance(data, DataView):
        return data
    if isinstance(data, (str, Path)):
        from gridtune.grids.dataset import open_dataset

        data = open_dataset(data, samples=samples, workers=workers, backend=backend, progress=progress)
        samples = None
    if hasattr(data, "manifest") and hasattr(data, "statuses"):  # a GridDataset
        n = len(data) if samples is None else min(samples, len(data))
        graphs = [data[i] for i in range(n)]
        frame = getattr(data, "frame", None)
        times = frame["solve_time_s"].to_numpy()[:n] if frame is not None and "solve_time_s" in frame else None
        return DataView(graphs, str(data.grid_name), str(data.content_hash), np.asarray(data.statuses)[:n],
                        times, str(data.manifest.get("schema_version", SCHEMA_VERSION)))
    if isinstance(data, Sequence) and len(data) > 0 and isinstance(data[0], Data):
        graphs = list(data if samples is None else data[:samples])
        statuses = np.array([STATUSES[int(g.status)] for g in graphs])
        name = str(getattr(graphs[0], "grid", "graphs"))
        return DataView(graphs, name, _hash_graphs(graphs), statuses)
    raise DataError(f"cannot read data `{type(data).__name__}`: expected a recipe, a dataset "
                    "directory, a case name, a GridDataset or a list of graphs")


def check_schema(view: DataView, meta_schema: str) -> None:
    """Fail with one message naming both schemas when the data and a checkpoint disagree."""
    width = view.graphs[0].x.shape[1]
    if str(view.schema_version) != str(meta_schema) or width != len(BUS_FEATURES):
        raise CheckpointError(f"checkpoint expects feature schema `v{meta_schema}` "
                              f"({len(BUS_FEATURES)} bus features) but data `{view.name}` has schema "
                              f"`v{view.schema_version}` ({width} bus features)")


def unknown_as_infeasible(view: DataView) -> DataView:
    """A copy of `view` whose `unknown` graphs count as infeasible (only when a user asks for it).

    The AC solver failing is not a certificate (docs/data.md, "Label statuses"); an operator who
    wants to treat every failed solve as "do not dispatch" can still train for that, explicitly.
    """
    unknown = STATUSES.index("unknown")
    graphs = []
    for g in view.graphs:
        if int(g.status) == unknown:
            g = g.clone()
            g.y_infeasible = torch.ones_like(g.y_infeasible)
        graphs.append(g)
    return dataclasses.replace(view, graphs=graphs)


def task_graphs(graphs: Sequence[Data], task: str) -> list[Data]:
    """The graphs a task learns from / is scored on (others have no target for it)."""
    key = TASK_TARGETS[task]
    return [g for g in graphs if torch.isfinite(g[key]).all()]


def is_source_list(data: Any) -> bool:
    """True for several data sources (recipes, directories, datasets, views), as opposed to one
    source or one list of graphs."""
    return (isinstance(data, (list, tuple)) and len(data) > 0
            and not isinstance(data[0], Data))


@dataclasses.dataclass
class PooledView:
    """Several grids' views as one: graphs concatenated, each grid split by its own statuses
    (`split_indices` with the same seed and fractions, so a checkpoint trained on the pool scores
    each grid's own test split when evaluated on that grid alone)."""

    view: DataView
    sources: list[DataView]
    offsets: list[int]

    def split(self, seed: int, fractions: tuple[float, float, float]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from gridtune.grids.split import split_indices

        parts: list[list[np.ndarray]] = [[], [], []]
        for v, off in zip(self.sources, self.offsets, strict=True):
            for k, idx in enumerate(split_indices(v.statuses, seed, fractions)):
                parts[k].append(idx + off)
        return tuple(np.concatenate(p) for p in parts)  # type: ignore[return-value]


def pool_views(views: list[DataView]) -> PooledView:
    """One `DataView` over several grids (see `PooledView`); names and hashes combine."""
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"data source `{dup}` is given twice; name each grid once")
    offsets = np.cumsum([0] + [len(v.graphs) for v in views[:-1]]).tolist()
    times = None
    if all(v.solve_time_s is not None for v in views):
        times = np.concatenate([np.asarray(v.solve_time_s, dtype=float) for v in views])
    schema = {str(v.schema_version) for v in views}
    if len(schema) > 1:
        raise DataError(f"data sources have different feature schemas {sorted(schema)}; rebuild them")
    h = hashlib.sha256("+".join(v.content_hash for v in views).encode()).hexdigest()[:16]
    pooled = DataView([g for v in views for g in v.graphs], "+".join(names), h,
                      np.concatenate([np.asarray(v.statuses) for v in views]), times, schema.pop())
    return PooledView(pooled, views, [int(o) for o in offsets])
