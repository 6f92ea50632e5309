"""The graphs of a PyG batch grouped by identical structure, so per-structure work is done once.

Scenarios of one dataset share a few dozen topologies (outage sets, ratings, generator limits), so
a batch of 256 graphs holds far fewer distinct B-theta matrices or loadability LPs than graphs.
`graph_groups` finds them without hashing every graph: each graph's row holds the columns that
define the structure (read in place where the graphs of one size are consecutive, as in a batch of
one grid), a random projection of each row proposes groups and an exact row comparison confirms
them; each group gets a content key (for caches across batches), hashed once per structure.

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
    edge_graph: np.ndarray  # (2E,) graph of each branch row


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
    return Layout(starts, counts, e_order, e_starts, e_counts, edge_graph)


def graph_groups(lay: Layout, edge_index: np.ndarray, node_cols: np.ndarray, edge_cols: np.ndarray
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, bytes]]:
    """Groups of graphs equal in `node_cols` (N, a), `edge_cols` (2E, c) and their local edge
    index: yields (graph ids (k,), bus ids (k, n), branch-row ids (k, 2E_g), key).

    A graph's row is its node columns, edge columns and local edge index, flattened. Where the
    graphs of one size lie one after another (a PyG batch of one grid), the rows are views of the
    batch's arrays, not copies; the key is the hash of the row either way."""
    sizes: dict[tuple[int, int], list[int]] = {}
    for g in np.flatnonzero(lay.counts > 0):
        sizes.setdefault((int(lay.counts[g]), int(lay.e_counts[g])), []).append(int(g))
    node_cols = np.ascontiguousarray(node_cols, dtype=float)
    edge_cols = np.ascontiguousarray(edge_cols, dtype=float)
    # (2E, 2): each branch row's ends numbered within its graph (compared, not projected)
    local_all = np.ascontiguousarray((edge_index - lay.starts[lay.edge_graph][None, :]).T)
    for (n, e), members in sizes.items():
        gid = np.asarray(members)
        nodes = lay.starts[gid][:, None] + np.arange(n)
        edges = lay.e_order[lay.e_starts[gid][:, None] + np.arange(e)]
        k = gid.size
        if _consecutive(nodes) and _consecutive(edges):
            first_node, first_edge = int(nodes[0, 0]), int(edges[0, 0])
            parts = [node_cols[first_node:first_node + k * n].reshape(k, -1),
                     edge_cols[first_edge:first_edge + k * e].reshape(k, -1),
                     local_all[first_edge:first_edge + k * e].reshape(k, -1)]
        else:
            parts = [node_cols[nodes].reshape(k, -1), edge_cols[edges].reshape(k, -1),
                     local_all[edges].reshape(k, -1)]
        yield from _equal_rows(gid, nodes, edges, parts)


def _consecutive(ids: np.ndarray) -> bool:
    """Whether the (k, m) index array is k * m consecutive indices in order."""
    flat = ids.reshape(-1)
    return bool(flat.size == 0 or (flat[-1] - flat[0] == flat.size - 1 and np.all(np.diff(flat) == 1)))


def _equal_rows(gid: np.ndarray, nodes: np.ndarray, edges: np.ndarray, parts: list[np.ndarray]
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, bytes]]:
    """Groups of equal rows (a row: the parts side by side; the last part, the local edge index,
    is compared but not projected): a random projection proposes them, an exact comparison with
    each group's first row confirms them."""
    import torch

    proj = sum((torch.from_numpy(p) @ _projection(p.shape[1])).numpy() for p in parts[:-1])  # torch: its threads
    _, first, inverse = np.unique(proj, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if all(np.array_equal(p, p[first[inverse]]) for p in parts):  # no projection collision
        order = np.argsort(inverse, kind="stable")
        for grp in np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1):
            yield gid[grp], nodes[grp], edges[grp], _row_key(parts, int(grp[0]), proj[grp[0]])
        return
    for label in np.unique(inverse):
        rows = np.flatnonzero(inverse == label)
        while rows.size:
            same = np.all([np.all(p[rows] == p[rows[0]], axis=1) for p in parts], axis=0)
            grp = rows[same]
            yield gid[grp], nodes[grp], edges[grp], _row_key(parts, int(grp[0]), proj[grp[0]])
            rows = rows[~same]


# projection of a row -> (the row's parts, its key): a structure seen before is compared with its
# stored copy instead of being hashed again (comparing 26 kB costs a fraction of hashing them)
_KEYS: dict[bytes, tuple[list[np.ndarray], bytes]] = {}
_KEYS_MAX = 4096


def _row_key(parts: list[np.ndarray], row: int, projected: np.ndarray) -> bytes:
    """Content key of one row: a hash of its parts' bytes."""
    probe = projected.tobytes() + b"".join(str(p.shape[1]).encode() for p in parts)
    hit = _KEYS.get(probe)
    if hit is not None and all(np.array_equal(p[row], q) for p, q in zip(parts, hit[0], strict=True)):
        return hit[1]
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(np.ascontiguousarray(p[row]).tobytes())
    key = h.digest()
    if len(_KEYS) < _KEYS_MAX:
        _KEYS[probe] = ([p[row].copy() for p in parts], key)
    return key


_PROJECTIONS: dict[int, object] = {}


def _projection(width: int):
    import torch

    if width not in _PROJECTIONS:
        _PROJECTIONS[width] = torch.from_numpy(np.random.default_rng(0).standard_normal((width, 2)))
    return _PROJECTIONS[width]
