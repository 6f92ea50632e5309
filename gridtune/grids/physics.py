"""AC network physics of the graph schema: the branch pi-model, injections and balance residuals.

The standard branch pi-model with off-nominal tap and phase shift, as in MATPOWER (Zimmerman et
al. 2011, "MATPOWER: steady-state operations, planning and analysis tools", manual section 3.2):
with y_s = 1/(r + jx), tau = tap * exp(j shift),

    I_f = (y_s + j b/2) / |tau|^2 * V_f - y_s / conj(tau) * V_t
    I_t = -y_s / tau * V_f + (y_s + j b/2) * V_t

The injection a state implies at bus i is sum_branches V_i conj(I_i) plus the shunt
|V_i|^2 (g_s - j b_s). Everything reads the raw per-unit features of `gridtune.grids.features`:
loads and shunts from `x`, branch parameters from `edge_attr`. Used by the conservation
constraints, the OPF metrics and the model's balance completion; this is its only home.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gridtune.grids.features import BRANCH_FEATURES, BUS_FEATURES, OPF_TARGETS, RATE_UNLIMITED_PU

_X = {n: BUS_FEATURES.index(n) for n in ("pd_pu", "qd_pu", "gs_pu", "bs_pu")}
_E = {n: BRANCH_FEATURES.index(n) for n in ("r_pu", "x_pu", "b_pu", "tap_ratio", "shift_rad",
                                            "in_service", "is_reverse", "rate_a_pu")}
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


def branch_loading(vm_pu: Tensor, va_rad: Tensor, edge_index: Tensor, edge_attr: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """Loading of each rated, in-service branch in percent of its rating: the larger apparent
    power of its two ends over `RATE_A` (MATPOWER's MVA flow limit), computed from a state.

    Returns:
        (loading_percent (L,), branch (L,)): `branch` numbers the graph's branches in row order
        (the forward rows of `edge_index`), so a loading can be matched to its branch.
    """
    s_f, s_t, keep = branch_flows(vm_pu, va_rad, edge_index, edge_attr)
    forward = edge_attr[:, _E["is_reverse"]] < 0.5
    number = torch.cumsum(forward.long(), 0) - 1  # branch number of each forward row
    rate = edge_attr[keep, _E["rate_a_pu"]].to(s_f.real.dtype)
    rated = rate < RATE_UNLIMITED_PU
    loading = 100.0 * torch.maximum(s_f.abs(), s_t.abs())[rated] / rate[rated]
    return loading, number[keep][rated]


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


def ac_power_balance(x: Tensor, edge_index: Tensor, edge_attr: Tensor, vm_pu: Tensor, va_rad: Tensor,
                     pg_pu: Tensor) -> tuple[Tensor, Tensor]:
    """Active-power balance of an operating point under the AC branch model, in float64.

    Nodal residual, per bus, in p.u.: `pg - pd - gs * vm^2 - sum of P flowing out on energised
    branches` (`branch_flows`).

    Args:
        x: raw bus features (N, F_bus); edge_index (2, 2E) and raw edge_attr (2E, F_branch)
            (only forward, in-service rows are used).
        vm_pu, va_rad, pg_pu: operating point per bus (N,).

    Returns:
        (nodal residual (N,) p.u., branch active losses (E_on,) p.u.).
    """
    d = torch.float64
    vm = vm_pu.to(d)
    s_f, s_t, keep = branch_flows(vm, va_rad.to(d), edge_index, edge_attr.to(d))
    f, t = edge_index[0, keep], edge_index[1, keep]
    out = torch.zeros_like(vm).index_add_(0, f, s_f.real).index_add_(0, t, s_t.real)
    xd = x.to(d)
    nodal = pg_pu.to(d) - xd[:, _X["pd_pu"]] - xd[:, _X["gs_pu"]] * vm ** 2 - out
    return nodal, s_f.real + s_t.real
