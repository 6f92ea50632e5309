"""The DC loadability without a solve: the LP cuts of each training topology, carried in the model.

Every solve of a topology's loadability LP (`gridtune.nn.basis_lp`) leaves a dual vertex, a cut
`mu >= w . pd + c` on `mu = 1 / lam`; the largest stored cut bounds `1 / lam` for any load of that
topology, exactly when the scenario's bottleneck is among the cuts (`basis_lp.bound_group`). On the
case118 recipe, the cuts of the training split's solves (49 topologies, 411 cuts) give the exact
`lam` for 93.5-94% of test scenarios, within 0.2% for 95% of them and 5% at worst, and no test
scenario needed a solve (`benchmarks/bench_inference.py`). A `CutTable` stores those cuts as buffers, so they
travel in the checkpoint; a model with `ModelConfig.loadability_cuts` answers `dc_overload` and
`dc_limit_loading` from them with one small product per topology in a batch, and solves the LP
only for a topology it never saw (or a load no stored cut bounds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

KEY_BYTES = 16


class CutTable(nn.Module):
    """Cuts per topology key (`gridtune.nn.loadability`'s topology digest).

    Buffers (empty until `fill`; a checkpoint's sizes are taken on load):
        keys     (T, 16) uint8   topology digests
        starts   (T + 1,) long   cut rows of topology t: starts[t]:starts[t + 1]
        sizes    (T, 2) long     buses and branch rows of each topology
        w, c     (K, n_max), (K,) float64: mu >= w . pd + c (pd zero-padded to n_max)
        loading  (K, e_max) float32: branch loadings of the solve that found each cut
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(0, KEY_BYTES, dtype=torch.uint8))
        self.register_buffer("starts", torch.zeros(1, dtype=torch.long))
        self.register_buffer("sizes", torch.zeros(0, 2, dtype=torch.long))
        self.register_buffer("w", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("c", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("loading", torch.zeros(0, 0, dtype=torch.float32))
        self._index: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def fill(self, topologies: Iterable[tuple[bytes, Any]]) -> CutTable:
        """Store the cuts of `(key, basis_lp.Topology)` pairs (those without cuts are skipped)."""
        items = [(k, t) for k, t in topologies if t.cuts_w is not None and len(t.cuts_w)]
        n_max = max((t.n for _, t in items), default=0)
        e_max = max((t.n_rows_edge for _, t in items), default=0)
        w, c, loading, starts, sizes = [], [], [], [0], []
        for _, t in items:
            k = t.cuts_w.shape[0]
            w.append(np.pad(t.cuts_w, ((0, 0), (0, n_max - t.n))))
            c.append(t.cuts_c)
            loading.append(np.pad(np.stack(t.cuts_loading), ((0, 0), (0, e_max - t.n_rows_edge))))
            starts.append(starts[-1] + k)
            sizes.append((t.n, t.n_rows_edge))
        self.keys = torch.tensor(np.frombuffer(b"".join(k for k, _ in items), dtype=np.uint8).reshape(-1, KEY_BYTES))
        self.starts = torch.tensor(starts, dtype=torch.long)
        self.sizes = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
        self.w = torch.from_numpy(np.concatenate(w) if w else np.zeros((0, 0)))
        self.c = torch.from_numpy(np.concatenate(c) if c else np.zeros(0))
        self.loading = torch.from_numpy(np.concatenate(loading).astype(np.float32) if loading
                                        else np.zeros((0, 0), dtype=np.float32))
        self._index = None
        return self

    def answer(self, key: bytes, pd: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray] | None] | None:
        """(lam, branch loading, d lam / d pd) per load row of `pd` (k, n), or None for the whole
        group when the topology has no cuts here; an entry is None where no cut bounds the load
        (mu <= 0: the caller solves it)."""
        if self._index is None:
            self._index = {bytes(row): i for i, row in enumerate(self.keys.numpy())}
        t = self._index.get(key)
        if t is None:
            return None
        n, e = (int(v) for v in self.sizes[t])
        if pd.shape[1] != n:
            return None
        lo, hi = int(self.starts[t]), int(self.starts[t + 1])
        w = self.w[lo:hi, :n]
        vals = (torch.from_numpy(np.ascontiguousarray(pd)) @ w.T).numpy() + self.c[lo:hi].numpy()  # (k, K_t)
        best = np.argmax(vals, axis=1)
        mu = vals[np.arange(pd.shape[0]), best]
        loading = self.loading[lo:hi, :e].numpy().astype(float)
        w_np = w.numpy()
        out: list[tuple[float, np.ndarray, np.ndarray] | None] = []
        for j in range(pd.shape[0]):
            if not mu[j] > 0:
                out.append(None)
                continue
            lam = 1.0 / mu[j]
            out.append((float(lam), loading[best[j]], -(lam ** 2) * w_np[best[j]]))
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the table's size is the checkpoint's: take each buffer's shape before loading it
        for name in ("keys", "starts", "sizes", "w", "c", "loading"):
            value = state_dict.get(prefix + name)
            if value is not None:
                setattr(self, name, torch.empty_like(value))
        self._index = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
