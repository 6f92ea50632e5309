"""Strategy names -> classes, registered in one place.

`register` is a class decorator; registering a name twice is an error. `make_strategy(name,
**options)` builds one; an unknown name lists every valid name with its one-line description.
"""

from __future__ import annotations

from typing import Any

from gridtune.errors import GridtuneError

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    name = getattr(cls, "name", "")
    if not name:
        raise GridtuneError(f"strategy class `{cls.__name__}` has no `name`")
    if name in _REGISTRY:
        raise GridtuneError(f"strategy name `{name}` is already registered by "
                            f"`{_REGISTRY[name].__name__}`; pick another name")
    _REGISTRY[name] = cls
    return cls


def _load() -> dict[str, type]:
    import gridtune.finetune.strategies  # noqa: F401  (registers the built-in strategies)
    return _REGISTRY


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
