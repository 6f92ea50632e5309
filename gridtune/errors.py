"""Error hierarchy. The CLI turns any `GridtuneError` into one line on stderr and exit code 2.

A message names the thing, shows the bad value in backticks and says what would be valid.
"""


class GridtuneError(Exception):
    """Base class for every error caused by a user's input or data."""


class SpecError(GridtuneError):
    """A TOML spec (recipe, constraint, study) is malformed, has unknown keys or bad values."""


class CaseError(GridtuneError):
    """An unknown case name or an unreadable / invalid grid file."""


class DataError(GridtuneError):
    """A dataset directory is missing, corrupt, or holds another recipe's data."""


class CheckpointError(GridtuneError):
    """A checkpoint is missing, corrupt, or does not match the data (schema, task)."""


class TrainingError(GridtuneError):
    """Training cannot go on (e.g. a loss or a constraint violation turned NaN)."""


def choices_text(valid: "list[str] | tuple[str, ...] | set[str]") -> str:
    """Format valid choices as `a`, `b`, `c` for error messages."""
    return ", ".join(f"`{v}`" for v in sorted(valid))
