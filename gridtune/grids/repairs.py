"""Repairs that make pandapower's stock IEEE cases match MATPOWER's case data.

pandapower ships the IEEE cases as nets converted from MATPOWER long ago. Compared with MATPOWER's
own arrays (MATPOWER 7, identical to those in the PYPOWER package) three kinds of data error and
one difference of formulation show up. Each repair below fixes one of them on a pandapower net,
in place, and returns `Repair` records saying which element changed and why; `docs/cases.md`
lists the measured effect per case.

1. `free_slack_voltage` (every case; formulation): pandapower's OPF pins an `ext_grid`'s voltage
   to its `vm_pu` set-point unless the ext_grid is `controllable`. MATPOWER treats the reference
   generator like any other: its voltage is a variable within the bus limits. Pinning it is why
   pandapower's nominal costs exceed MATPOWER's on case9 (5311.91 vs 5296.69), case30, case39 ...
2. `swap_reversed_taps` (case24_ieee_rts, case57, case300; data): transformers whose MATPOWER
   "from" bus (the tap side) is the lower-voltage end are stored with `hv_bus` = MATPOWER's "to"
   bus and `tap_side="hv"`, but the tap ratio was kept. The off-nominal ratio so sits on the
   wrong winding (0.97 at bus 4 becomes 0.97 at bus 18, i.e. 1/0.97 seen from bus 4) and the
   series impedance is referred to the wrong side. On case57 that leaves no feasible voltage
   profile: `runopp` fails with every init. Swapping `hv_bus`/`lv_bus` (and their rated kV)
   puts the ratio back on MATPOWER's tap bus and reproduces MATPOWER's branch exactly.
3. `charging_trafos_to_lines` (case118, case300, any converted MATPOWER file; data/model):
   MATPOWER lines (tap ratio 0) that join buses of different base kV were converted into
   pandapower transformers whose line charging B is stored as magnetising current `i0_percent`
   (negative for capacitive charging). pandapower's transformer model takes the magnitude of
   `i0_percent`, so capacitive charging becomes inductive (B = -0.636 instead of +0.638 on
   case118's 65-68), and its T-model also shifts R and X by ~0.3%. A pandapower line with the
   same per-unit r, x and b is the exact MATPOWER pi-branch, so the transformer is replaced.
   On case300 this (with repair 2) is what turns a failed `runopp` into MATPOWER's optimum.
4. `unmirror_sgen_q_limits` (case24_ieee_rts; data): the 22 generators stored as `sgen` (second
   and further units on a bus) carry `min_q_mvar = -Qmax`, `max_q_mvar = -Qmin` of MATPOWER's
   generator (e.g. [-10, 0] instead of [0, 10] Mvar): they absorb reactive power where MATPOWER's
   units produce it.

Source of the reference data: R. D. Zimmerman, C. E. Murillo-Sanchez, R. J. Thomas, "MATPOWER:
Steady-State Operations, Planning and Analysis Tools for Power Systems Research and Education",
IEEE Trans. Power Systems 26(1), 2011; case files case9 ... case300 of MATPOWER 7.1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gridtune.errors import CaseError


@dataclasses.dataclass(frozen=True)
class Repair:
    """One correction applied to one element of a net.

    Attributes:
        kind: the repair function's name, e.g. `swap_reversed_taps`.
        element: pandapower table and index before the repair, e.g. `trafo 3`.
        detail: what changed, with MATPOWER bus numbers where they identify the element.
    """

    kind: str
    element: str
    detail: str


# ---- 2. transformers with the tap on the wrong winding --------------------------------------
# Each entry is (hv bus, lv bus, tap ratio) as stored by pandapower, buses by their MATPOWER
# number (`net.bus.name`). Found by comparing `to_ppc` of the stock net with MATPOWER's branch
# arrays: every one is a transformer whose MATPOWER branch runs lv -> hv with an off-nominal
# ratio on the lv ("from") bus. Reversed transformers with ratio 1.0 are electrically the same
# either way and are left alone (38 on case300, 2 on case57).
REVERSED_TAPS: dict[str, tuple[tuple[int, int, float], ...]] = {
    # All five 230/138 kV transformers: MATPOWER taps them on the 138 kV side (buses 3, 9, 10).
    "case24_ieee_rts": ((24, 3, 1.03), (11, 9, 1.03), (12, 9, 1.03), (11, 10, 1.02),
                        (12, 10, 1.02)),
    # MATPOWER's case57 has no base kV; pandapower added voltage levels and made the
    # "higher" end hv, reversing 15 of 17 tapped transformers (the two 24-23 units have no tap).
    "case57": ((18, 4, 0.97), (18, 4, 0.978), (20, 21, 1.043), (26, 24, 1.043), (29, 7, 0.967),
               (32, 34, 0.975), (41, 11, 0.955), (45, 15, 0.955), (46, 14, 0.9), (51, 10, 0.93),
               (49, 13, 0.895), (43, 11, 0.958), (56, 40, 0.958), (57, 39, 0.98), (55, 9, 0.94)),
    # Sixteen of case300's 128 transformers; the seven into 70xx buses are generator step-ups
    # tapped on the generator side in MATPOWER.
    "case300": ((4, 3, 0.971), (64, 63, 1.017), (210, 189, 1.03), (196, 193, 1.03),
                (69, 201, 1.03), (211, 202, 1.01), (2040, 204, 1.05), (198, 209, 1.03),
                (219, 218, 0.97), (62, 7062, 0.95), (17, 7017, 0.942), (39, 7039, 0.965),
                (57, 7057, 0.95), (44, 7044, 0.942), (55, 7055, 0.942), (71, 7071, 0.9565)),
}

# ---- 4. sgen reactive limits stored with the sign flipped -----------------------------------
MIRRORED_SGEN_Q: dict[str, int] = {"case24_ieee_rts": 22}  # case -> number of sgens affected


def _bus_number(net: Any, bus: int) -> int:
    """MATPOWER bus number of a pandapower bus: stock cases keep it as the bus name, `from_ppc`
    as the bus index."""
    name = net.bus.at[bus, "name"]
    try:
        return int(name)
    except (TypeError, ValueError):
        return int(bus)


def tap_ratio(trafo: Any) -> float:
    """Off-nominal ratio of a two-winding transformer row on its tap side (1.0 without a tap)."""
    pos, neutral, step = trafo.get("tap_pos"), trafo.get("tap_neutral"), trafo.get("tap_step_percent")
    if pos is None or step is None or any(_isnan(v) for v in (pos, step)):
        return 1.0
    neutral = 0.0 if neutral is None or _isnan(neutral) else float(neutral)
    return 1.0 + (float(pos) - neutral) * float(step) / 100.0


def _isnan(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False


def free_slack_voltage(net: Any) -> list[Repair]:
    """Let the OPF choose each ext_grid's voltage within its bus limits, as MATPOWER does."""
    repairs = []
    for idx in net.ext_grid.index:
        if bool(net.ext_grid.get("controllable", {}).get(idx, False)):
            continue
        repairs.append(Repair("free_slack_voltage", f"ext_grid {idx}",
                              f"voltage at bus {_bus_number(net, net.ext_grid.at[idx, 'bus'])} free "
                              f"within bus limits (was pinned at {net.ext_grid.at[idx, 'vm_pu']} p.u.)"))
    net.ext_grid["controllable"] = True
    return repairs


def swap_reversed_taps(net: Any, case: str) -> list[Repair]:
    """Swap hv/lv of the transformers in `REVERSED_TAPS[case]` (module docstring, item 2).

    Raises `CaseError` when a listed transformer is missing or has another ratio: the stored data
    changed and the table must be re-derived, rather than silently repairing the wrong element.
    """
    repairs = []
    t = net.trafo
    for hv, lv, ratio in REVERSED_TAPS.get(case, ()):
        hits = [i for i in t.index
                if _bus_number(net, t.at[i, "hv_bus"]) == hv and _bus_number(net, t.at[i, "lv_bus"]) == lv
                and abs(tap_ratio(t.loc[i]) - ratio) < 1e-6 and t.at[i, "tap_side"] == "hv"]
        if len(hits) != 1:
            raise CaseError(f"case `{case}`: repair table expects one transformer hv {hv} -> lv {lv} "
                            f"with tap ratio {ratio} on the hv side, found {len(hits)}; pandapower's "
                            "stored case changed, re-derive gridtune.grids.repairs.REVERSED_TAPS")
        i = hits[0]
        # Swap buses and rated voltages together so the per-unit impedance is unchanged and the
        # ratio (still on `tap_side="hv"`, now MATPOWER's from bus) applies on the tap bus.
        t.loc[i, ["hv_bus", "lv_bus"]] = [t.at[i, "lv_bus"], t.at[i, "hv_bus"]]
        t.loc[i, ["vn_hv_kv", "vn_lv_kv"]] = [t.at[i, "vn_lv_kv"], t.at[i, "vn_hv_kv"]]
        repairs.append(Repair("swap_reversed_taps", f"trafo {i}",
                              f"ratio {ratio} moved from bus {hv} to MATPOWER's tap bus {lv}"))
    return repairs


def charging_trafos_to_lines(net: Any) -> list[Repair]:
    """Replace tap-less transformers that carry MATPOWER line charging by exact pi-model lines.

    A transformer qualifies when it has no off-nominal ratio or phase shift, its rated voltages
    equal its buses' (a MATPOWER line between voltage levels, not a real transformer) and it has
    magnetising current or iron losses (the converted line charging / conductance).
    """
    import pandapower as pp

    if len(net.trafo) == 0:
        return []
    base_mva = float(net.sn_mva)
    vn = net.bus["vn_kv"]
    repairs = []
    for i in list(net.trafo.index):
        tr = net.trafo.loc[i]
        shift = 0.0 if _isnan(tr.get("shift_degree", 0.0)) else float(tr.get("shift_degree", 0.0))
        if (abs(tap_ratio(tr) - 1.0) > 1e-12 or shift != 0.0 or (tr.i0_percent == 0 and tr.pfe_kw == 0)
                or not math.isclose(tr.vn_hv_kv, vn[tr.hv_bus]) or not math.isclose(tr.vn_lv_kv, vn[tr.lv_bus])):
            continue
        if len(net.switch) and np.any((net.switch.et == "t") & (net.switch.element == i)):
            continue  # a switched transformer is a real device; leave it
        scale = base_mva / float(tr.sn_mva) / float(tr.parallel)   # sn base -> system base
        z_pu = tr.vk_percent / 100.0 * scale
        r_pu = tr.vkr_percent / 100.0 * scale
        x_pu = math.copysign(math.sqrt(max(z_pu ** 2 - r_pu ** 2, 0.0)), z_pu)  # series capacitors: x < 0
        g_pu = tr.pfe_kw / 1000.0 / base_mva * tr.parallel
        # i0 carries |y_m|; pandapower's converter stores capacitive charging with a minus sign.
        y_pu = tr.i0_percent / 100.0 * tr.sn_mva / base_mva * tr.parallel
        b_pu = -math.copysign(math.sqrt(max(y_pu ** 2 - g_pu ** 2, 0.0)), y_pu)
        z_base = vn[tr.hv_bus] ** 2 / base_mva                      # line per-unit uses from-bus kV
        f_hz = float(net.f_hz)
        new = pp.create_line_from_parameters(
            net, from_bus=int(tr.hv_bus), to_bus=int(tr.lv_bus), length_km=1.0,
            r_ohm_per_km=r_pu * z_base, x_ohm_per_km=x_pu * z_base,
            c_nf_per_km=b_pu / (2 * math.pi * f_hz * z_base) * 1e9, g_us_per_km=g_pu / z_base * 1e6,
            max_i_ka=tr.sn_mva * tr.parallel / (math.sqrt(3) * vn[tr.hv_bus]),
            max_loading_percent=tr.get("max_loading_percent", 100.0),
            in_service=bool(tr.in_service), name=tr.get("name"))
        net.trafo.drop(index=i, inplace=True)
        repairs.append(Repair("charging_trafos_to_lines", f"trafo {i}",
                              f"branch {_bus_number(net, tr.hv_bus)}-{_bus_number(net, tr.lv_bus)} "
                              f"now line {new}: r {r_pu:.5f}, x {x_pu:.5f}, b {b_pu:+.5f} p.u."))
    return repairs


def unmirror_sgen_q_limits(net: Any, case: str) -> list[Repair]:
    """Give the sgens of `MIRRORED_SGEN_Q` cases MATPOWER's reactive limits back."""
    expected = MIRRORED_SGEN_Q.get(case)
    if expected is None:
        return []
    if len(net.sgen) != expected:
        raise CaseError(f"case `{case}`: repair expects {expected} sgens, found `{len(net.sgen)}`; "
                        "pandapower's stored case changed, re-derive MIRRORED_SGEN_Q")
    lo, hi = net.sgen.min_q_mvar.copy(), net.sgen.max_q_mvar.copy()
    net.sgen["min_q_mvar"], net.sgen["max_q_mvar"] = -hi, -lo
    return [Repair("unmirror_sgen_q_limits", f"sgen {i}",
                   f"q limits [{lo[i]}, {hi[i]}] -> [{-hi[i]}, {-lo[i]}] Mvar") for i in net.sgen.index]


CASE_REPAIRS: tuple[Callable[[Any, str], list[Repair]], ...] = (
    lambda net, case: free_slack_voltage(net),
    swap_reversed_taps,
    lambda net, case: charging_trafos_to_lines(net),
    unmirror_sgen_q_limits,
)


def repair_case(net: Any, case: str) -> list[Repair]:
    """Apply every repair that concerns a stock case (in place); returns what changed."""
    out: list[Repair] = []
    for fn in CASE_REPAIRS:
        out.extend(fn(net, case))
    return out


def swap_converted_taps(net: Any, ppc: dict[str, Any]) -> list[Repair]:
    """Put the tap back on MATPOWER's "from" bus after `pandapower.converter.from_ppc`.

    `from_ppc` makes the higher-kV end `hv_bus` but keeps `tap_side="hv"` and the ratio, the same
    reversal as in the stored cases (item 2): a branch tapped on its lower-voltage end gets its
    ratio on the wrong winding. The case arrays say which branches those are. Buses are matched
    by MATPOWER number, which `from_ppc` uses as the bus index.
    """
    from pandapower.pypower.idx_brch import F_BUS, T_BUS, TAP

    branch = np.asarray(ppc["branch"], dtype=float)
    tapped = {}
    for row in branch:
        if row[TAP] not in (0.0, 1.0):
            tapped.setdefault((int(row[F_BUS]), int(row[T_BUS])), []).append(float(row[TAP]))
    repairs = []
    t = net.trafo
    for i in t.index:
        hv, lv = int(t.at[i, "hv_bus"]), int(t.at[i, "lv_bus"])
        ratio = tap_ratio(t.loc[i])
        if (hv, lv) in tapped or not any(abs(r - ratio) < 1e-9 for r in tapped.get((lv, hv), ())):
            continue  # stored in MATPOWER's orientation, or no reversed tapped branch matches
        t.loc[i, ["hv_bus", "lv_bus"]] = [lv, hv]
        t.loc[i, ["vn_hv_kv", "vn_lv_kv"]] = [t.at[i, "vn_lv_kv"], t.at[i, "vn_hv_kv"]]
        repairs.append(Repair("swap_converted_taps", f"trafo {i}",
                              f"ratio {ratio:g} moved from bus {hv} to MATPOWER's tap bus {lv}"))
    return repairs


def align_converted_matpower(net: Any, ppc: dict[str, Any]) -> list[Repair]:
    """Repairs for a net converted from a user's MATPOWER file with `from_ppc`.

    `from_ppc` already turns tap-less branches between voltage levels into `impedance` elements
    that keep the sign of the charging, so only the slack voltage and the tap side need fixing.
    """
    return free_slack_voltage(net) + swap_converted_taps(net, ppc)
