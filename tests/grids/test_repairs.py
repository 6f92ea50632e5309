"""Repairs of pandapower's stock cases: each fixes what it claims, and the broken cases solve.

Reference values are MATPOWER 7.1's case files (case57, case118, case24_ieee_rts) and published
AC-OPF objectives.
"""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest

from gridtune.errors import CaseError
from gridtune.grids import repairs
from gridtune.grids.cases import PUBLISHED_OBJECTIVES, solve_nominal


@functools.cache
def _loaded(name: str):
    import pandapower.networks as pn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(pn, name)()


def _stock(name: str):
    """A fresh copy of pandapower's stored case (loading takes seconds, copying milliseconds)."""
    return copy.deepcopy(_loaded(name))


def _ppc_branches(net) -> dict[tuple[int, int], list[np.ndarray]]:
    """to_ppc branch rows keyed by (from, to) MATPOWER bus numbers."""
    from pandapower.converter.pypower import to_ppc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppc = to_ppc(net, init="flat", mode="opf", check_connectivity=False)
    number = {int(ppc_row): int(net.bus.at[b, "name"])
              for b, ppc_row in zip(net.bus.index, net._pd2ppc_lookups["bus"][net.bus.index])}
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for row in ppc["branch"].real:
        out.setdefault((number[int(row[0])], number[int(row[1])]), []).append(row)
    return out


def test_case57_fails_before_repair_and_matches_matpower_after():
    stock = _stock("case57")
    # Stock data: no convergence (also not with init "pf" or "results", see docs/cases.md).
    assert not solve_nominal(stock, inits=("flat",)).converged
    fixes = repairs.repair_case(stock, "case57")
    assert sum(f.kind == "swap_reversed_taps" for f in fixes) == 15
    result = solve_nominal(stock, inits=("flat",))
    assert result.converged
    assert result.objective == pytest.approx(PUBLISHED_OBJECTIVES["case57"], rel=1e-5)


def test_case57_taps_sit_on_matpowers_tap_bus_after_repair():
    from pandapower.pypower.idx_brch import BR_X, TAP

    before, net = _stock("case57"), _stock("case57")
    repairs.repair_case(net, "case57")
    # MATPOWER case57 branch 4-18: ratio 0.97 at bus 4, x 0.555. Stock pandapower puts it at 18.
    assert (18, 4) in _ppc_branches(before) and (4, 18) not in _ppc_branches(before)
    rows = _ppc_branches(net)[(4, 18)]
    assert sorted(round(r[TAP], 6) for r in rows) == [0.97, 0.978]
    assert sorted(round(r[BR_X], 6) for r in rows) == [0.43, 0.555]


@pytest.mark.slow
def test_case300_fails_before_repair_and_matches_matpower_after():
    stock = _stock("case300")
    assert not solve_nominal(stock, inits=("flat",)).converged
    fixes = repairs.repair_case(stock, "case300")
    kinds = [f.kind for f in fixes]
    assert (kinds.count("swap_reversed_taps"), kinds.count("charging_trafos_to_lines")) == (16, 14)
    result = solve_nominal(stock, inits=("flat",))
    assert result.converged
    assert result.objective == pytest.approx(PUBLISHED_OBJECTIVES["case300"], rel=1e-5)


def test_charging_transformers_become_lines_with_capacitive_charging():
    from pandapower.pypower.idx_brch import BR_B, BR_R, BR_X

    stock, net = _stock("case118"), _stock("case118")
    (row,) = _ppc_branches(stock)[(65, 68)]
    assert row[BR_B] < 0  # pandapower's transformer model turned the charging inductive
    fixes = repairs.charging_trafos_to_lines(net)
    assert len(fixes) == 4 and len(net.trafo) == 9 and len(net.line) == 177
    (row,) = _ppc_branches(net)[(65, 68)]
    # MATPOWER case118 branch 65-68: r 0.00138, x 0.016, b 0.638
    assert (row[BR_R], row[BR_X], row[BR_B]) == pytest.approx((0.00138, 0.016, 0.638), rel=1e-6)


def test_sgen_reactive_limits_are_unmirrored_on_case24():
    net = _stock("case24_ieee_rts")
    at_bus1 = net.sgen.bus == 0
    assert sorted(zip(net.sgen.min_q_mvar[at_bus1], net.sgen.max_q_mvar[at_bus1])) == \
        [(-30.0, 25.0), (-30.0, 25.0), (-10.0, 0.0)]
    fixes = repairs.unmirror_sgen_q_limits(net, "case24_ieee_rts")
    assert len(fixes) == 22
    # MATPOWER case24_ieee_rts bus 1 units: Q in [0, 10] (20 MW units), [-25, 30] (76 MW units)
    assert sorted(zip(net.sgen.min_q_mvar[at_bus1], net.sgen.max_q_mvar[at_bus1])) == \
        [(-25.0, 30.0), (-25.0, 30.0), (0.0, 10.0)]


def test_free_slack_voltage_explains_pandapowers_case9_cost():
    stock, net = _stock("case9"), _stock("case9")
    pinned = solve_nominal(stock, inits=("flat",))
    (fix,) = repairs.free_slack_voltage(net)
    assert "pinned at 1.0 p.u." in fix.detail
    free = solve_nominal(net, inits=("flat",))
    # pandapower's own nominal cost keeps the slack at 1.0 p.u.; MATPOWER lets it rise to 1.1
    assert pinned.objective == pytest.approx(5311.91, abs=0.01)
    assert free.objective == pytest.approx(PUBLISHED_OBJECTIVES["case9"], abs=0.01)


def test_repair_table_refuses_changed_data():
    net = _stock("case57")
    first = net.trafo.index[0]
    net.trafo.at[first, "tap_pos"] = 0.0  # as if pandapower had re-issued case57 with other taps
    with pytest.raises(CaseError, match=r"case `case57`: repair table expects one transformer "
                                        r"hv 18 -> lv 4 with tap ratio 0\.97 .* found 0; .*re-derive"):
        repairs.swap_reversed_taps(net, "case57")


def test_matpower_reference_arrays_are_reproduced():
    """With PYPOWER installed (it ships MATPOWER's case files), compare every branch."""
    import importlib

    pytest.importorskip("pypower")
    from pandapower.pypower.idx_brch import BR_B, BR_R, BR_X, TAP

    for name in ("case57", "case24_ieee_rts"):
        ref = getattr(importlib.import_module(f"pypower.{name}"), name)()
        net = _stock(name)
        repairs.repair_case(net, name)
        ours = _ppc_branches(net)
        for row in ref["branch"]:
            key = (int(row[0]), int(row[1]))
            cands = ours.get(key, []) + [r for r in ours.get(key[::-1], []) if r[TAP] == 1.0]
            tap = row[TAP] if row[TAP] else 1.0
            assert any(np.allclose([r[BR_R], r[BR_X], r[BR_B], r[TAP]],
                                   [row[BR_R], row[BR_X], row[BR_B], tap], rtol=1e-6, atol=1e-9)
                       for r in cands), (name, key)
