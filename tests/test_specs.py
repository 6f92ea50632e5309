import dataclasses

import pytest

from gridtune.errors import SpecError
from gridtune.specs import from_table, read_toml


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 3


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    rate: float = 1.0
    pair: tuple[float, float] | None = None
    inner: Inner = Inner()


def test_builds_nested_dataclass_and_coerces_ints_to_float():
    spec = from_table(Outer, {"name": "a", "rate": 2, "pair": [1, 2], "inner": {"width": 5}}, where="x.toml")
    assert spec == Outer(name="a", rate=2.0, pair=(1, 2), inner=Inner(width=5))
    assert isinstance(spec.rate, float)


def test_unknown_key_names_file_and_key_and_lists_valid():
    with pytest.raises(SpecError, match=r"x.toml \[inner\]: unknown key `depth`; valid keys: `width`"):
        from_table(Outer, {"name": "a", "inner": {"depth": 1}}, where="x.toml")


def test_wrong_type_and_missing_key():
    with pytest.raises(SpecError, match=r"key `rate` has bad value `'fast'`"):
        from_table(Outer, {"name": "a", "rate": "fast"}, where="x.toml")
    with pytest.raises(SpecError, match=r"missing required key `name`"):
        from_table(Outer, {}, where="x.toml")


def test_malformed_toml_names_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("a = 1\nb = = 2\n")
    with pytest.raises(SpecError, match=r"bad.toml: malformed TOML: .*line"):
        read_toml(p)
    with pytest.raises(SpecError, match=r"does not exist"):
        read_toml(tmp_path / "missing.toml")
