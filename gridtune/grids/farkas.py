"""Infeasibility certificates that outlive the solve that found them (Farkas rays).

When Clarabel finds a conic problem `A x + s = b, s in K` infeasible it returns a ray `z` in the
dual cone `K*` with `A^T z = 0` and `b^T z < 0`. Such a `z` certifies infeasibility of any other
problem with the same cones, exactly or not, given bounds on `x` valid for its feasible points:
for a feasible `x`, `0 <= z^T s = b^T z - r^T x` with `r = A^T z`, so

    b^T z < min over the box of r^T x   =>   no feasible x.

The relaxations of one grid are the same cone program for every scenario, only `b` (loads,
limits) and some entries of `A` (branch outages) change, so a ray found on one scenario often
certifies the next ones for a matrix product instead of an interior-point solve: on the shipped
case118 recipe 177 of 235 SOC-infeasible scenarios were settled by a ray of an earlier one.

Soundness does not rest on the solver's accuracy: the ray is projected onto `K*`, `r` and
`b^T z` are recomputed for the new problem, every variable must be bounded where `r` is not
zero, and the inequality must hold with every constraint loosened by `MARGIN` (p.u.), far above
rounding. That margin also keeps the outcome independent of which rays a process has seen: a
problem certified this way is infeasible by more than Clarabel's feasibility tolerance, so a
fresh solve calls it infeasible too.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

MARGIN = 1e-6    # constraints loosened by this (p.u.) must still be infeasible
CAPACITY = 64    # rays kept per problem, the most recently useful first


class FarkasRays:
    """Rays that proved earlier instances of one cone program infeasible, re-checked on new data.

    Args:
        dims: cvxpy's `ConeDims` of the program (the layout of `z`: zero, nonnegative, SOC and
            PSD blocks, in Clarabel's order).
        capacity: rays kept, least recently useful dropped first.
    """

    def __init__(self, dims, capacity: int = CAPACITY):
        self.capacity = capacity
        self.blocks = _cone_blocks(dims)
        self.rays: list[np.ndarray] = []
        self.hits = 0

    def certifies(self, a: sp.spmatrix, b: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> bool:
        """True if a kept ray proves `a x + s = b, s in K, lower <= x <= upper` infeasible."""
        if not self.rays:
            return False
        z = np.stack(self.rays)                              # (rays, rows)
        r = np.asarray((a.T @ z.T).T)                         # (rays, columns)
        gap = z @ b + MARGIN * np.abs(z).sum(axis=1) - _box_minimum(r, lower, upper)
        good = np.flatnonzero(gap < 0)
        if good.size == 0:
            return False
        self.hits += 1
        self.rays.insert(0, self.rays.pop(int(good[0])))
        return True

    def remember(self, z: np.ndarray, a: sp.spmatrix, b: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray) -> bool:
        """Keep the solver's ray `z` for this problem if, made exact, it certifies the problem.

        Blocks of `z` on rows that touch an unbounded variable are zeroed (their part of `r`
        could not be bounded), then `z` is projected onto the dual cone. Returns whether it was
        kept.
        """
        z = np.array(z, dtype=float)
        unbounded = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
        if unbounded.size:
            touched = np.zeros(len(z), dtype=bool)
            touched[sp.csc_matrix(a)[:, unbounded].tocoo().row] = True
            for kind, start, stop in self.blocks:
                if kind in ("zero", "nonneg"):  # one cone per row
                    z[start:stop][touched[start:stop]] = 0.0
                elif touched[start:stop].any():
                    z[start:stop] = 0.0
        z = project_dual(z, self.blocks)
        r = np.asarray(a.T @ z).ravel()
        if not b @ z + MARGIN * np.abs(z).sum() < _box_minimum(r[None, :], lower, upper)[0]:
            return False
        self.rays.insert(0, z)
        del self.rays[self.capacity:]
        return True


def project_dual(z: np.ndarray, blocks: list[tuple[str, int, int]]) -> np.ndarray:
    """Euclidean projection of `z` onto the dual cone (free on zero rows; the nonnegative, SOC
    and PSD cones are self-dual; PSD blocks in Clarabel's scaled upper-triangle vectorisation)."""
    z = z.copy()
    for kind, start, stop in blocks:
        part = z[start:stop]
        if kind == "nonneg":
            np.maximum(part, 0.0, out=part)
        elif kind == "soc":
            t, x = part[0], part[1:]
            norm = float(np.linalg.norm(x))
            if norm > t:
                if norm <= -t:
                    part[:] = 0.0
                else:
                    half = (t + norm) / 2
                    part[0], part[1:] = half, half * x / norm
        elif kind == "psd":
            values, vectors = np.linalg.eigh(svec_to_matrix(part))
            part[:] = matrix_to_svec((vectors * np.maximum(values, 0.0)) @ vectors.T)
    return z


def svec_to_matrix(v: np.ndarray) -> np.ndarray:
    """The symmetric matrix of a vector in Clarabel's PSD layout (upper triangle by columns,
    off-diagonal entries scaled by sqrt(2))."""
    n = int(round((np.sqrt(8 * len(v) + 1) - 1) / 2))
    rows, cols = _triangle(n)
    m = np.zeros((n, n))
    scale = np.where(rows == cols, 1.0, 1 / np.sqrt(2))
    m[rows, cols] = v * scale
    m[cols, rows] = v * scale
    return m


def matrix_to_svec(m: np.ndarray) -> np.ndarray:
    rows, cols = _triangle(m.shape[0])
    return m[rows, cols] * np.where(rows == cols, 1.0, np.sqrt(2))


def _triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    cols = np.concatenate([np.full(c + 1, c) for c in range(n)])
    rows = np.concatenate([np.arange(c + 1) for c in range(n)])
    return rows, cols


def _box_minimum(r: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """min of r x over lower <= x <= upper, per row of `r` (-inf where an unbounded x meets r != 0)."""
    with np.errstate(invalid="ignore"):  # 0 * inf where r = 0: not selected
        low = np.where(r > 0, r * lower, np.where(r < 0, r * upper, 0.0))
    return low.sum(axis=1)


def _cone_blocks(dims) -> list[tuple[str, int, int]]:
    """(kind, first row, end row) of each cone in a cvxpy `ConeDims`, in Clarabel's order."""
    if dims.exp or dims.p3d or getattr(dims, "pnd", None):
        raise ValueError("Farkas rays support zero, nonnegative, SOC and PSD cones only")
    blocks = [("zero", 0, dims.zero)] if dims.zero else []
    row = dims.zero
    blocks += [("nonneg", row, row + dims.nonneg)] if dims.nonneg else []
    row += dims.nonneg
    for n in dims.soc:
        blocks.append(("soc", row, row + n))
        row += n
    for n in dims.psd:
        size = n * (n + 1) // 2
        blocks.append(("psd", row, row + size))
        row += size
    return blocks
