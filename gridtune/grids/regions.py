"""Regions of a grid: the buses of one zone (pandapower `bus.zone`, which pandapower fills from
MATPOWER's `BUS_AREA`) or a list of buses, as a recipe's `[changes] scale_loads` and `[loads]`
name them.

A recipe whose `[loads]` names a region draws scenarios in which only that region's loads vary
(`gridtune.grids.scenarios.sample_scenario`, `vary`): the loads of every other bus stay at their
nominal values. Bus references are pandapower bus indices of the base grid (MATPOWER bus number
- 1 for the default cases, the file's bus numbers for a MATPOWER file), as in `[changes]`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from gridtune.errors import SpecError, choices_text

if TYPE_CHECKING:
    import numpy as np

    from gridtune.grids.model import GridModel
    from gridtune.grids.recipe import Recipe


def zone_names(net: Any) -> list[str]:
    """The zones of a net's buses as written in a spec (`1`, not `1.0`), sorted."""
    zones = net.bus.zone.dropna() if "zone" in net.bus else []
    return sorted({str(int(z)) if isinstance(z, float) and z.is_integer() else str(z) for z in zones},
                  key=lambda z: (not z.isdigit(), int(z) if z.isdigit() else 0, z))


def zone_buses(net: Any, zone: int | str, where: str) -> set[int]:
    """Indices of the buses of `zone` (matched as text, then as a number); a zone the net does not
    have is a `SpecError` naming the valid zones."""
    zones = net.bus.zone.dropna() if "zone" in net.bus else net.bus.iloc[:0, :0]
    if len(zones) == 0:
        raise SpecError(f"{where}: the base grid has no bus zones (pandapower `bus.zone` is "
                        "empty); select the buses with `buses = [...]`")
    picked = zones[zones.astype(str) == str(zone)]
    if picked.empty:
        try:
            picked = zones[zones.astype(float) == float(zone)]
        except (TypeError, ValueError):
            pass
    if picked.empty:
        raise SpecError(f"{where}: key `zone` = `{zone}` names no bus zone of the base grid; "
                        f"valid zones: {choices_text(zone_names(net))}")
    return set(picked.index.astype(int))


def loaded_buses(net: Any, buses: set[int], where: str) -> set[int]:
    """The buses of `buses` that carry an in-service load; none is a `SpecError`."""
    on = net.load.bus[net.load.bus.isin(buses) & net.load.in_service]
    if on.empty:
        raise SpecError(f"{where}: the selected buses carry no load; select buses with loads")
    return set(on.astype(int))


def region_buses(net: Any, *, zone: int | str | None, buses: tuple[int, ...] | None,
                 where: str) -> set[int]:
    """The loaded buses of a region given by `zone` or by `buses` (each checked against `net`)."""
    if zone is not None:
        return loaded_buses(net, zone_buses(net, zone, where), where)
    valid = set(int(b) for b in net.bus.index[net.bus.in_service])
    for bus in buses or ():
        if bus not in valid:
            raise SpecError(f"{where}: key `buses` names `{bus}`, which is not an in-service bus "
                            f"of the base grid ({len(valid)} buses, indices {min(valid)}..{max(valid)})")
    return loaded_buses(net, set(buses or ()), where)


def region_mask(recipe: Recipe, grid: GridModel) -> np.ndarray | None:
    """Per bus of `grid` (internal order), whether its loads vary: the recipe's `[loads]` region,
    or None when every load varies (no region)."""
    loads = recipe.loads
    if loads.zone is None and loads.buses is None:
        return None
    return _mask(recipe.case, loads.zone, loads.buses, tuple(int(b) for b in grid.bus_ids),
                 recipe.source or "recipe")


@functools.lru_cache(maxsize=8)
def _mask(case: str, zone: int | str | None, buses: tuple[int, ...] | None, bus_ids: tuple[int, ...],
          source: str) -> np.ndarray:
    """Cached per process: labelling workers draw thousands of scenarios of one recipe."""
    import numpy as np

    from gridtune.grids.cases import load_net

    chosen = region_buses(load_net(case), zone=zone, buses=buses, where=f"{source} [loads]")
    mask = np.isin(np.asarray(bus_ids), sorted(chosen))
    mask.setflags(write=False)
    return mask
