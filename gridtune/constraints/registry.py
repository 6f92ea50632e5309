"""Constraint kinds by name: `register_constraint("kind")` on a `Constraint` subclass.

Built-in kinds register when `gridtune.constraints` is imported; a user's class registers the
same way from its own module, which a spec loads through its `plugins` list. A duplicate kind is
an error, so a plugin cannot silently replace a built-in.
"""

from __future__ import annotations

from collections.abc import Callable

from gridtune.constraints.base import Constraint
from gridtune.errors import SpecError, choices_text

_KINDS: dict[str, type[Constraint]] = {}


def register_constraint(kind: str) -> Callable[[type[Constraint]], type[Constraint]]:
    """Class decorator: make `cls` available to specs as `kind = "<kind>"`."""

    def wrap(cls: type[Constraint]) -> type[Constraint]:
        if not (isinstance(cls, type) and issubclass(cls, Constraint)):
            raise SpecError(f"`{cls!r}` registered as constraint kind `{kind}` is not a "
                            "subclass of gridtune.constraints.Constraint")
        existing = _KINDS.get(kind)
        # Re-importing the same module (e.g. a plugin loaded by two specs) is not a conflict.
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise SpecError(f"constraint kind `{kind}` is already registered by "
                            f"`{existing.__module__}.{existing.__qualname__}`")
        cls.kind = kind
        _KINDS[kind] = cls
        return cls

    return wrap


def resolve_constraint(kind: str) -> type[Constraint]:
    """The class registered as `kind`; unknown kinds list the valid ones."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise SpecError(f"unknown constraint kind `{kind}`; valid kinds: "
                        f"{choices_text(_KINDS)}") from None


def constraint_kinds() -> list[str]:
    return sorted(_KINDS)
