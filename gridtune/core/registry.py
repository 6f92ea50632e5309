"""Strategy names -> classes, registered in one place.

`register` is a class decorator; registering a name twice is an error. `make_strategy(name,
**options)` builds one; an unknown name lists every valid name with its one-line description.
"""

from __future__ import annotations

from typing import Any

import gridtune.core.strategies  # noqa: F401  (importing the package registers the built-ins)
from gridtune.core.strategies.base import REGISTRY, register
from gridtune.errors import GridtuneError

__all__ = ["register", "make_strategy", "strategy_class", "strategy_names", "rebuild_model"]


def _load() -> dict[str, type]:
    return REGISTRY


def strategy_names() -> list[str]:
    return sorted(_load())


def list_strategies() -> list[tuple[str, str]]:
    """(name, one-line description) for every registered strategy, sorted by name."""
    reg = _load()
    return [(n, reg[n].description) for n in sorted(reg)]


def strategies_text() -> str:
    rows = list_strategies()
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"  {n:<{width}}  {d}" for n, d in rows)


def strategy_class(name: str) -> type:
    reg = _load()
    if name not in reg:
        raise GridtuneError(f"unknown strategy `{name}`; valid strategies:\n{strategies_text()}")
    return reg[name]


def make_strategy(name: str, **options: Any) -> Any:
    """Build strategy `name` with `options` (its constructor's keyword arguments)."""
    cls = strategy_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        import inspect
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise GridtuneError(f"strategy `{name}`: bad options `{sorted(options)}` ({exc}); "
                            f"valid options: {', '.join(f'`{v}`' for v in valid) or 'none'}"
                            ) from exc


def rebuild_model(model: Any, name: str, saved_config: dict[str, Any]) -> Any:
    """A freshly built `model` given the structure strategy `name` left in a saved model, from the
    strategy's saved `config()`: options its constructor does not take (state recorded after
    training) are ignored."""
    import inspect

    cls = strategy_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(**{k: v for k, v in saved_config.items() if k in accepted}).rebuild(model)
