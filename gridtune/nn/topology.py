"""The graphs of a PyG batch grouped by identical structure, so per-structure work is done once.

Scenarios of one dataset share a few dozen topologies (outage sets, ratings, generator limits), so
a batch of 256 graphs holds far fewer distinct B-theta matrices or loadability LPs than graphs.
`graph_groups` finds them without hashing every graph: the graphs of one size are stacked on the
columns that define the structure, a random projection of each row proposes groups and an exact
row comparison confirms them; each group gets a content key (for caches across batches).

Dense products go through torch, so that they run on the threads torch is given (one, for timed
inference) rather than on a BLAS thread pool that a loaded machine makes slow for small matrices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class Layout:
    """Where each graph's buses and branch rows sit in a batch."""

    starts: np.ndarray    # (G,) first bus of each graph
    counts: np.ndarray    # (G,) buses per graph
    e_order: np.ndarray   # branch rows sorted by graph (identity for a PyG batch)
    e_starts: np.ndarray  # (G,) first position in e_order of each graph's rows
    e_counts: np.ndarray  # (G,)


def layout(idx: np.ndarray, edge_index: np.ndarray, n_graphs: int | None = None) -> Layout:
    """The batch layout; each graph's buses must be contiguous and in graph order (PyG's)."""
    if n_graphs is None:
        n_graphs = int(idx.max()) + 1 if idx.size else 0
    if np.any(idx[1:] < idx[:-1]):
        raise ValueError("each graph's buses must be contiguous and in graph order")
    counts = np.bincount(idx, minlength=n_graphs)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64) if n_graphs else np.zeros(0, dtype=np.int64)
    edge_graph = idx[edge_index[0]] if edge_index.size else np.zeros(0, dtype=np.int64)
    e_counts = np.bincount(edge_graph, minlength=n_graphs)
    e_starts = np.r_[0, np.cumsum(e_counts)[:-1]].astype(np.int64) if n_graphs else np.zeros(0, dtype=np.int64)
    e_order = (np.arange(edge_graph.size) if np.all(edge_graph[1:] >= edge_graph[:-1])
               else np.argsort(edge_graph, kind="stable"))
    return Layout(starts, counts, e_order, e_starts, e_counts)


def graph_groups(lay: Layout, edge_index: np.ndarray, node_cols: np.ndarray, edge_cols: np.ndarray
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, bytes]]:
    """Groups of graphs equal in `node_cols` (N, a), `edge_cols` (2E, c) and their local edge
    index: yields (graph ids (k,), bus ids (k, n), branch-row ids (k, 2E_g), key)."""
    sizes: dict[tuple[int, int], list[int]] = {}
    for g in np.flatnonzero(lay.counts > 0):
        sizes.setdefault((int(lay.counts[g]), int(lay.e_counts[g])), []).append(int(g))
    import torch

    node_cols = np.asarray(node_cols, dtype=float)
    edge_cols = np.asarray(edge_cols, dtype=float)
    for (n, e), members in sizes.items():
        gid = np.asarray(members)
        nodes = lay.starts[gid][:, None] + np.arange(n)
        edges = lay.e_order[lay.e_starts[gid][:, None] + np.arange(e)]
        local = (edge_index[:, edges] - lay.starts[gid][None, :, None]).transpose(1, 0, 2)
        stacked = np.concatenate([node_cols[nodes].reshape(gid.size, -1), edge_cols[edges].reshape(gid.size, -1),
                                  local.reshape(gid.size, -1).astype(float)], axis=1)
        proj = (torch.from_numpy(stacked) @ _projection(stacked.shape[1])).numpy()  # torch: its thread setting
        _, first, inverse = np.unique(proj, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        if np.array_equal(stacked, stacked[first[inverse]]):  # no projection collision: one comparison
            order = np.argsort(inverse, kind="stable")
            for grp in np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1):
                key = hashlib.blake2b(np.ascontiguousarray(stacked[grp[0]]).tobytes(), digest_size=16).digest()
                yield gid[grp], nodes[grp], edges[grp], key
            continue
        for label in np.unique(inverse):
            rows = np.flatnonzero(inverse == label)
            while rows.size:
                same = np.all(stacked[rows] == stacked[rows[0]], axis=1)
                grp = rows[same]
                key = hashlib.blake2b(np.ascontiguousarray(stacked[grp[0]]).tobytes(), digest_size=16).digest()
                yield gid[grp], nodes[grp], edges[grp], key
                rows = rows[~same]


_PROJECTIONS: dict[int, object] = {}


def _projection(width: int):
    import torch

    if width not in _PROJECTIONS:
        _PROJECTIONS[width] = torch.from_numpy(np.random.default_rng(0).standard_normal((width, 2)))
    return _PROJECTIONS[width]
