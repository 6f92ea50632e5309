"""Constraint specs: shipped files load for their tasks; every bad input is one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from gridtune.constraints import constraint_kinds, load_constraint_set, register_constraint
from gridtune.constraints.base import Constraint
from gridtune.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,task,kinds", [
    ("monotone_load", "feasibility", ["monotonic"]),
    ("monotone_cost", "cost", ["monotonic"]),
    ("power_balance", "opf", ["system_balance"]),
    ("nodal_balance", "opf", ["nodal_balance"]),
    ("bounds", "opf", ["generator_limits", "voltage_limits"]),
])
def test_shipped_specs_load_for_their_task(name, task, kinds):
    cs = load_constraint_set(name, task)  # the shipped name resolves inside the package
    assert [c.kind for c in cs] == kinds
    assert cs.formulation["name"] in ("lagrangian", "augmented-lagrangian")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


MONO = '[[constraint]]\nkind = "monotonic"\nname = "m"\n'


@pytest.mark.parametrize("body,task,message", [
    ('[[constraint]]\nkind = "monotone"\n', "feasibility",
     r"\[\[constraint\]\] #1: unknown constraint kind `monotone`; valid kinds: .*`monotonic`"),
    (MONO + 'output = "prob"\n', "feasibility", r"unknown output `prob`; valid outputs: "),
    (MONO + 'direction = "wind"\n', "feasibility", r"unknown input direction `wind`; valid "
                                                   r"directions: `active_load`"),
    (MONO + 'sense = "up"\n', "feasibility", r"key `sense` has bad value `'up'`; expected one of "
                                             r"`decreasing`, `increasing`"),
    (MONO + "tolerance = -0.1\n", "feasibility", r"constraint `m`: `tolerance` must be a finite "
                                                 r"number >= 0, got `-0.1`"),
    (MONO + "weight = -1\n", "feasibility", r"`weight` must be a finite number >= 0, got `-1.0`"),
    (MONO + "colour = 1\n", "feasibility", r"unknown key `colour`; valid keys: "),
    (MONO + MONO, "feasibility", r"constraint name `m` is used twice"),
    ('[[constraint]]\nname = "x"\n', "feasibility", r"missing required key `kind`"),
    ('[formulation]\nname = "admm"\n' + MONO, "feasibility",
     r"\[formulation\]: unknown formulation `admm`; valid formulations: `augmented-lagrangian`, "
     r"`lagrangian`, `penalty`"),
    ('[formulation]\ndual_lr = 1\n' + MONO, "feasibility",
     r"\[formulation\]: unknown key `dual_lr`; valid keys: .*`name`"),
    ('speed = 1\n' + MONO, "feasibility", r"unknown key `speed`; valid keys: `constraint`, "),
    ("", "feasibility", r"no constraints declared"),
    ('[[constraint]]\nkind = "nodal_balance"\n', "feasibility",
     r"constraint `nodal_balance` \(kind `nodal_balance`\) does not apply to task `feasibility`; "
     r"it applies to `opf`"),
    (MONO, "opf", r"constraint `m` \(kind `monotonic`\) does not apply to task `opf`: output "
                  r"`p_infeasible` is not produced by it"),
    (MONO, "regression", r"unknown task `regression`; valid tasks: `cost`, `feasibility`, `opf`"),
    ("[[constraint]\n", "opf", r"malformed TOML"),
])
def test_spec_errors_name_the_problem(tmp_path, body, task, message):
    path = write(tmp_path, body)
    with pytest.raises(SpecError, match=message):
        load_constraint_set(path, task)


def test_bad_formulation_setting_fails_when_built(tmp_path):
    from gridtune.constraints import training_term

    path = write(tmp_path, '[formulation.lagrangian]\ndual_lr = -2\n' + MONO)
    with pytest.raises(SpecError, match=r"`dual_lr` must be a finite number > 0, got `-2`"):
        training_term(path, "feasibility", "lagrangian")


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match=r"spec file `.*nope.toml` does not exist"):
        load_constraint_set(tmp_path / "nope.toml", "opf")


def test_user_constraint_from_the_example_plugin(tmp_path, case9_grid, make_graphs):
    # the shipped example: a spec next to a Python file that registers `line_loading`
    for name in ("custom_constraint.py", "line_loading.toml"):
        shutil.copy(ROOT / "examples" / name, tmp_path / name)
    cs = load_constraint_set(tmp_path / "line_loading.toml", "opf")
    assert "line_loading" in constraint_kinds()
    (con,) = cs.constraints
    g = make_graphs(case9_grid, 1, low=1.0, high=1.0)[0]
    flat = torch.zeros(g.num_nodes, 4)
    flat[:, 0] = 1.0  # flat start: no flow at all
    assert con.violation(None, g, flat, train=False).item() == 0.0
    spread = flat.clone()
    spread[:, 1] = torch.linspace(-0.5, 0.5, g.num_nodes)  # wide angle gaps: heavy flows
    assert con.violation(None, g, spread, train=False).item() > 0.1
    with pytest.raises(SpecError, match=r"`line_loading`.*does not apply to task `feasibility`"):
        load_constraint_set(tmp_path / "line_loading.toml", "feasibility")


def test_plugin_errors(tmp_path):
    path = write(tmp_path, 'plugins = ["missing.py"]\n' + MONO)
    with pytest.raises(SpecError, match=r"constraint plugin `.*missing.py` does not exist"):
        load_constraint_set(path, "feasibility")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    path = write(tmp_path, 'plugins = ["broken.py"]\n' + MONO)
    with pytest.raises(SpecError, match=r"`.*broken.py` failed to import: RuntimeError: boom"):
        load_constraint_set(path, "feasibility")


def test_a_kind_cannot_be_registered_twice():
    with pytest.raises(SpecError, match=r"constraint kind `monotonic` is already registered by "
                                        r"`gridtune.constraints.monotonic.Monotonic`"):
        @register_constraint("monotonic")
        class Other(Constraint):
            pass
