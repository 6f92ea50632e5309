"""Conservation of power for the OPF head: system balance and nodal (Kirchhoff) balance.

Both read the raw per-unit features of the graph (`gridtune.grids.features`): loads and shunts
from `x`, branch parameters from `edge_attr`, and the prediction `(vm_pu, va_rad, pg_pu, qg_pu)`
per bus from the OPF head.

Nodal balance uses the standard branch pi-model with off-nominal tap and phase shift, as in
MATPOWER (Zimmerman et al. 2011, "MATPOWER: steady-state operations, planning and analysis tools",
manual section 3.2): with y_s = 1/(r + jx), tau = tap * exp(j shift),

    I_f = (y_s + j b/2) / |tau|^2 * V_f - y_s / conj(tau) * V_t
    I_t = -y_s / tau * V_f + (y_s + j b/2) * V_t

and the injection the predicted state implies at bus i is sum_branches V_i conj(I_i) plus the
shunt |V_i|^2 (g_s - j b_s); it must equal predicted generation minus load.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from gridtune.constraints.base import Constraint
from gridtune.constraints.graph import graph_reduce, graph_sum
from gridtune.constraints.registry import register_constraint
from gridtune.errors import SpecError
from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, OPF_TARGETS

_X = {n: BUS_FEATURES.index(n) for n in ("pd_pu", "qd_pu", "gs_pu", "bs_pu")}
_E = {n: BRANCH_FEATURES.index(n) for n in ("r_pu", "x_pu", "b_pu", "tap_ratio", "shift_rad",
                                            "in_service", "is_reverse")}
_VM, _VA, _PG, _QG = (OPF_TARGETS.index(n) for n in ("vm_pu", "va_rad", "pg_pu", "qg_pu"))


def branch_flows(vm_pu: Tensor, va_rad: Tensor, edge_index: Tensor, edge_attr: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Complex power entering each in-service branch at its from end and at its to end.

    Only the forward row (`is_reverse == 0`) of each branch is used: it carries the branch's own
    from / to orientation, which the tap and the shift depend on.

    Args:
        vm_pu, va_rad: bus voltage magnitude and angle.
        edge_index: (2, 2E) rows [from; to].
        edge_attr: (2E, len(BRANCH_FEATURES)) raw branch features.

    Shapes:
        vm_pu, va_rad: (N,); returns s_from (K,), s_to (K,) complex per-unit and the boolean row
        mask (2E,) selecting the K forward in-service rows of `edge_index` / `edge_attr`.
    """
    keep = (edge_attr[:, _E["is_reverse"]] < 0.5) & (edge_attr[:, _E["in_service"]] > 0.5)
    a = edge_attr[keep]
    f, t = edge_index[0, keep], edge_index[1, keep]
    ys = 1.0 / torch.complex(a[:, _E["r_pu"]], a[:, _E["x_pu"]])
    half_b = torch.complex(torch.zeros_like(a[:, 0]), a[:, _E["b_pu"]] / 2)
    tau = torch.polar(a[:, _E["tap_ratio"]], a[:, _E["shift_rad"]])
    v = torch.polar(vm_pu, va_rad)
    vf, vt = v[f], v[t]
    i_f = (ys + half_b) / (tau * tau.conj()) * vf - ys / tau.conj() * vt
    i_t = -ys / tau * vf + (ys + half_b) * vt
    return vf * i_f.conj(), vt * i_t.conj(), keep


def branch_injections(vm_pu: Tensor, va_rad: Tensor, edge_index: Tensor, edge_attr: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Active and reactive power flowing into the network at each bus through its branches.

    Shapes:
        vm_pu, va_rad: (N,); returns two (N,) tensors, per-unit on the system base.
    """
    s_f, s_t, keep = branch_flows(vm_pu, va_rad, edge_index, edge_attr)
    f, t = edge_index[0, keep], edge_index[1, keep]
    n = vm_pu.shape[0]
    p = torch.zeros(n, dtype=vm_pu.dtype).index_add(0, f, s_f.real).index_add(0, t, s_t.real)
    q = torch.zeros(n, dtype=vm_pu.dtype).index_add(0, f, s_f.imag).index_add(0, t, s_t.imag)
    return p, q


def nodal_mismatch(x: Tensor, edge_index: Tensor, edge_attr: Tensor, state: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """Per-bus power mismatch of a predicted OPF state.

    mismatch = (pg - pd) - (branch injection + shunt), for P and Q.

    Args:
        x: (N, len(BUS_FEATURES)) raw bus features.
        edge_index, edge_attr: the graph's branches (both directions).
        state: (N, 4) in `OPF_TARGETS` order.

    Shapes:
        returns (dp_pu (N,), dq_pu (N,)).
    """
    vm, va = state[:, _VM], state[:, _VA]
    p_br, q_br = branch_injections(vm, va, edge_index, edge_attr.to(state.dtype))
    x = x.to(state.dtype)
    v2 = vm * vm
    dp = state[:, _PG] - x[:, _X["pd_pu"]] - (p_br + v2 * x[:, _X["gs_pu"]])
    dq = state[:, _QG] - x[:, _X["qd_pu"]] - (q_br - v2 * x[:, _X["bs_pu"]])
    return dp, dq


@register_constraint("nodal_balance")
@dataclasses.dataclass
class NodalBalance(Constraint):
    """Kirchhoff balance at every bus of the predicted OPF state (AC power-flow equations).

    Per-graph violation: `reduce` (mean, default, or max) over buses of |dP| + |dQ| (per-unit).
    An exact AC power-flow solution gives zero.
    """

    reduce: Literal["mean", "max"] = "mean"

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        dp, dq = nodal_mismatch(batch.x, batch.edge_index, batch.edge_attr, output)
        return graph_reduce(dp.abs() + dq.abs(), batch, self.reduce)


@register_constraint("system_balance")
@dataclasses.dataclass
class SystemBalance(Constraint):
    """Total generation covers total load plus non-negative, bounded losses.

    loss_pu = sum(pg) - sum(pd) - sum(gs * vm^2) per graph (shunt consumption at the predicted
    voltage). In `ac` mode the violation is the distance of loss_pu from
    [min_loss_fraction, max_loss_fraction] * total load; in `dc` mode (lossless DC model) it is
    |loss_pu|: exact balance.

    Args:
        mode: `ac` (default) or `dc`.
        min_loss_fraction: lower bound on losses as a fraction of total load (default: 0).
        max_loss_fraction: upper bound (default: 0.05; transmission losses in the IEEE cases stay
            near 1 to 3% of load at the OPF).
    """

    mode: Literal["ac", "dc"] = "ac"
    min_loss_fraction: float = 0.0
    max_loss_fraction: float = 0.05

    tasks: ClassVar[tuple[str, ...]] = ("opf",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_loss_fraction <= self.max_loss_fraction:
            raise SpecError(f"constraint `{self.name}`: need 0 <= min_loss_fraction <= "
                            f"max_loss_fraction, got `{self.min_loss_fraction}` and "
                            f"`{self.max_loss_fraction}`")

    def violation(self, model: nn.Module, batch: Any, output: Tensor, *, train: bool) -> Tensor:
        x = batch.x.to(output.dtype)
        vm = output[:, _VM]
        gen = graph_sum(output[:, _PG], batch)
        load = graph_sum(x[:, _X["pd_pu"]] + x[:, _X["gs_pu"]] * vm * vm, batch)
        loss = gen - load
        if self.mode == "dc":
            return loss.abs()
        lo = self.min_loss_fraction * load
        hi = self.max_loss_fraction * load
        return torch.relu(lo - loss) + torch.relu(loss - hi)
