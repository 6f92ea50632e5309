"""Shipped data files (recipes, constraint sets, studies) are package data: every one resolves by
name from the package directory, and the package build ships every one of them."""

from __future__ import annotations

import glob
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import gridtune
from gridtune.errors import SpecError
from gridtune.specs import (
    RESOURCES,
    SHIPPED_KINDS,
    read_toml,
    resolve_spec_file,
    shipped_names,
    shipped_path,
)

PACKAGE = Path(gridtune.__file__).resolve().parent
REPO = PACKAGE.parent


def files_of(kind: str) -> list[Path]:
    return sorted((PACKAGE / "resources" / kind).glob("*.toml"))


def test_resources_live_inside_the_package():
    assert RESOURCES == PACKAGE / "resources"
    for kind in SHIPPED_KINDS:
        assert files_of(kind), f"nothing shipped under resources/{kind}"
    # nothing is looked up next to the package any more
    for old in ("datasets", "constraints", "examples/studies", "examples/recipes"):
        assert not list((REPO / old).glob("*.toml")), f"data files left in `{old}/`"


@pytest.mark.parametrize("kind", SHIPPED_KINDS)
def test_every_shipped_file_resolves_by_name_from_the_package(kind):
    names = shipped_names(kind)
    assert names == [p.stem for p in files_of(kind)]
    for name in names:
        path = shipped_path(kind, name)
        assert path is not None and path.is_relative_to(PACKAGE / "resources" / kind)
        read_toml(path)  # valid TOML


def test_expected_names_are_shipped():
    from gridtune.grids.cases import CASE_NAMES

    assert set(CASE_NAMES) | {"case30_rerated"} <= set(shipped_names("datasets"))
    assert {"monotone_load", "monotone_cost", "power_balance", "nodal_balance",
            "bounds"} <= set(shipped_names("constraints"))
    assert {"quickstart", "ieee_transfer", "constraints"} <= set(shipped_names("studies"))


def test_unknown_names_and_kinds():
    assert shipped_path("datasets", "case9999") is None
    assert shipped_path("datasets", "../datasets/case14") is None
    assert shipped_path("datasets", "case14.toml") is None  # a file name, not a shipped name
    with pytest.raises(ValueError, match="unknown kind"):
        shipped_path("recipes", "case14")


def test_loaders_resolve_shipped_names_from_the_package(tmp_path, monkeypatch):
    from gridtune.constraints import load_constraint_set
    from gridtune.grids.recipe import recipe_for
    from gridtune.studies.spec import load_study

    monkeypatch.chdir(tmp_path)  # nothing relative to the working directory or the checkout
    recipe = recipe_for("case14")
    assert Path(recipe.source).is_relative_to(PACKAGE / "resources" / "datasets")
    rerated = recipe_for("case30_rerated")
    assert rerated.case == "case30" and rerated.limits.rating_factor == 1.3
    cs = load_constraint_set("monotone_load", "feasibility")
    assert Path(cs.source).is_relative_to(PACKAGE / "resources" / "constraints")
    study = load_study("quickstart")
    assert Path(study.base_dir) == PACKAGE / "resources" / "studies"
    assert study.constraint_path("monotone_load") == shipped_path("constraints", "monotone_load")


def test_unknown_names_list_the_shipped_ones(tmp_path, monkeypatch):
    from gridtune.constraints import load_constraint_set
    from gridtune.studies.spec import load_study

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"neither a file nor a shipped constraint set; shipped: "
                                        r".*`monotone_load`"):
        load_constraint_set("monotone_lod", "feasibility")
    with pytest.raises(SpecError, match=r"neither a file nor a shipped study; shipped: "
                                        r".*`quickstart`"):
        load_study("quickstar")
    with pytest.raises(SpecError, match=r"does not exist"):
        load_constraint_set("missing.toml", "feasibility")


def test_a_users_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    from gridtune.constraints import load_constraint_set
    from gridtune.studies.spec import load_study

    own = tmp_path / "monotone_load"  # a user's file that happens to carry a shipped name
    own.write_text('[[constraint]]\nkind = "monotonic"\nname = "mine"\noutput = "logit"\n'
                   'direction = "load"\n')
    assert resolve_spec_file("constraints", "monotone_load", base_dir=tmp_path) == own
    monkeypatch.chdir(tmp_path)
    assert load_constraint_set("monotone_load", "feasibility").names == ["mine"]
    (tmp_path / "quickstart").write_text(
        'name = "mine"\nsources = ["case9"]\ntargets = ["case30_rerated"]\n'
        'strategies = ["full"]\nlabels = [10]\nconstraints = ["monotone_load"]\n')
    study = load_study("quickstart")
    assert study.name == "mine" and study.constraint_path("monotone_load") == own.resolve()


def _package_data_patterns() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]["package-data"]["gridtune"]


def test_pyproject_package_data_covers_every_resource():
    shipped = {p.relative_to(PACKAGE).as_posix() for kind in SHIPPED_KINDS for p in files_of(kind)}
    matched: set[str] = set()
    for pattern in _package_data_patterns():  # setuptools expands these with recursive glob
        matched |= set(glob.glob(pattern, root_dir=PACKAGE, recursive=True))
    assert shipped <= matched, f"not shipped by pyproject: {sorted(shipped - matched)}"


@pytest.mark.slow
def test_built_wheel_contains_every_resource(tmp_path):
    """Build the wheel from a copy of the source tree (nothing is written into the checkout)."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "gridtune",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "-w", str(tmp_path / "w"),
                           "--no-deps", "--no-build-isolation", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "w").glob("gridtune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in SHIPPED_KINDS:
        for p in files_of(kind):
            assert f"gridtune/resources/{kind}/{p.name}" in names
