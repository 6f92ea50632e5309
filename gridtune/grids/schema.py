"""The version of the graph feature schema (`gridtune.grids.features`), on its own so that reading
a dataset's manifest (`gridtune data info`) needs neither torch nor pandapower. Datasets and
checkpoints record it; one of another version is refused by name."""

SCHEMA_VERSION = "1"
