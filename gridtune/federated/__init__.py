"""Federated training of grid models across sites (Flower), personalisation per site and
differential privacy (DP-SGD per graph, or clipped and noised client updates).

    gridtune federated SPEC.toml --out DIR

Modules: `spec` (the typed TOML spec), `sites` (each site's data and split), `weights` (the
shared parameters as arrays), `privacy` (DP-SGD, client-level DP, the RDP accountant),
`client` (local training of one site, the Flower client), `node` (a loopback site process),
`server` (aggregation and the Flower strategy), `engine` (in-process simulation and loopback
processes), `personalise`, `run` (the workflow end to end) and `report`.
"""
