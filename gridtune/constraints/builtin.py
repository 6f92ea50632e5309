"""Importing this module registers every built-in constraint kind."""

from gridtune.constraints import bounds, conservation, monotonic  # noqa: F401

BUILTIN_KINDS = ("monotonic", "nodal_balance", "system_balance", "generator_limits",
                 "voltage_limits")
