"""Formulations on a constrained toy problem with a known optimum.

    minimise (x - 2)^2  subject to  x <= 1      optimum x* = 1, multiplier lambda* = 2 (KKT:
                                                2 (x* - 2) + lambda* = 0)
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from gridtune.constraints import Constraint, ConstraintSet, make_formulation, register_constraint
from gridtune.errors import SpecError, TrainingError


class Point(nn.Module):
    def __init__(self, start: float = 3.0) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.tensor([start]))

    def forward(self, batch):
        return self.x


@register_constraint("toy_at_most_one")
@dataclasses.dataclass
class AtMostOne(Constraint):
    """relu(x - 1); `poison_at` makes the violation NaN from that value of x down."""

    poison_below: float = -math.inf

    def violation(self, model, batch, output, *, train):
        v = torch.relu(output - 1.0)
        if float(output.detach()) < self.poison_below:
            v = v * float("nan")
        return v


@register_constraint("toy_at_most_one_scaled")
@dataclasses.dataclass
class AtMostOneScaled(Constraint):
    """units * relu(x - 1): the same constraint measured in other units."""

    units: float = 1.0

    def violation(self, model, batch, output, *, train):
        return self.units * torch.relu(output - 1.0)


def solve(formulation: str, steps: int = 800, lr: float = 0.03, units: float | None = None,
          **kw) -> tuple[float, object]:
    torch.manual_seed(0)
    model = Point()
    c = AtMostOne("x_at_most_one") if units is None else AtMostOneScaled("x_at_most_one", units=units)
    cs = ConstraintSet([c], "cost")
    term = make_formulation(formulation, cs, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        opt.zero_grad()
        loss = (model(None) - 2.0).pow(2).sum() + term(model, None, step)
        loss.backward()
        opt.step()
    return float(model.x.detach()), term


def test_lagrangian_converges_to_the_known_optimum():
    x, term = solve("lagrangian", dual_lr=0.05)
    assert x == pytest.approx(1.0, abs=0.03)  # chatters by about lr * lambda
    # one-sided violations: the multiplier never falls, so it ends dual-feasible (>= 2)
    assert 2.0 <= term.multipliers["x_at_most_one"] < 6.0


@pytest.mark.parametrize("formulation,kw", [
    ("lagrangian", {"dual_lr": 0.1}),
    ("augmented-lagrangian", {"penalty_init": 0.5, "penalty_growth": 1.02, "penalty_max": 20.0}),
])
def test_with_a_budget_both_converge_to_primal_and_dual_optimum(formulation, kw):
    # E[v] <= 0.25 moves the optimum to x* = 1.25 with lambda* = 2 (2 - 1.25) = 1.5
    x, term = solve(formulation, budget={"x_at_most_one": 0.25}, **kw)
    assert x == pytest.approx(1.25, abs=1e-3)
    assert term.multipliers["x_at_most_one"] == pytest.approx(1.5, abs=1e-2)
    if formulation == "augmented-lagrangian":
        assert term.rho > 2.0  # the quadratic penalty grew


def test_augmented_lagrangian_penalty_is_in_the_violations_units():
    # the benchmark's failure (monotonicity of a probability, violations ~1e-3): with rho ~ 1 the
    # multiplier barely moves and the constraint is ignored; rho scaled by 1 / units^2 gives
    # back the unit-scale solution, multiplier scaled by 1 / units
    units = 1e-3
    x, _ = solve("augmented-lagrangian", units=units)
    assert x > 1.9  # unconstrained optimum 2: nothing enforced
    kw = {"penalty_init": 0.5, "penalty_growth": 1.02, "penalty_max": 20.0,
          "budget": {"x_at_most_one": 0.25}}
    x1, t1 = solve("augmented-lagrangian", **kw)
    scaled = {"penalty_init": 0.5 / units**2, "penalty_growth": 1.02, "penalty_max": 20.0 / units**2,
              "budget": {"x_at_most_one": 0.25 * units}}
    xs, ts = solve("augmented-lagrangian", units=units, **scaled)
    assert xs == pytest.approx(x1, abs=1e-3) and xs == pytest.approx(1.25, abs=1e-3)
    assert ts.multipliers["x_at_most_one"] * units == pytest.approx(t1.multipliers["x_at_most_one"],
                                                                    rel=1e-3)


def test_warmup_fits_the_task_first_then_enforces():
    x, term = solve("lagrangian", steps=300, dual_lr=0.05, warmup_steps=300)
    assert x == pytest.approx(2.0, abs=1e-3)  # unconstrained optimum: no term during warm-up
    assert term.multipliers["x_at_most_one"] == 0.0
    from gridtune.constraints.formulations import WARMUP_PENALTY
    assert term.validation_penalty(None, []) == WARMUP_PENALTY  # selection prefers later epochs
    x, term = solve("lagrangian", steps=1100, dual_lr=0.05, warmup_steps=300)
    assert x == pytest.approx(1.0, abs=0.06)  # chatters by about lr * lambda
    hist = term.history
    assert hist[299]["x_at_most_one/multiplier"] == 0.0 and hist[-1]["x_at_most_one/multiplier"] >= 2.0
    with pytest.raises(SpecError, match=r"`warmup_steps` must be an integer >= 0, got `-1`"):
        make_formulation("lagrangian", term.constraint_set, warmup_steps=-1)


def test_a_positive_initial_multiplier_keeps_the_term_in_warmup_with_the_dual_frozen():
    # warm-up at lambda = 1: stationary point of (x-2)^2 + relu(x-1) is x = 1.5
    x, term = solve("lagrangian", steps=300, dual_lr=0.05, warmup_steps=300, init_multiplier=1.0)
    assert x == pytest.approx(1.5, abs=1e-3)
    assert all(r["x_at_most_one/multiplier"] == 1.0 for r in term.history)
    x, term = solve("lagrangian", steps=1100, dual_lr=0.05, warmup_steps=300, init_multiplier=1.0)
    assert x == pytest.approx(1.0, abs=0.06) and term.multipliers["x_at_most_one"] >= 2.0


def test_augmented_lagrangian_with_an_initial_multiplier_is_active_in_warmup_too():
    # warm-up at lambda = 1, rho = 1: term (relu(1 + (x - 1))^2 - 1) / 2 = (x^2 - 1) / 2 for x > 1,
    # stationary point of (x-2)^2 + (x^2 - 1) / 2 is x = 4/3; the dual and rho stay put
    x, term = solve("augmented-lagrangian", steps=300, warmup_steps=300, init_multiplier=1.0)
    assert x == pytest.approx(4 / 3, abs=1e-3)
    assert term.multipliers["x_at_most_one"] == 1.0 and term.rho == 1.0
    x, _ = solve("augmented-lagrangian", steps=300, warmup_steps=300)
    assert x == pytest.approx(2.0, abs=1e-3)  # no initial multiplier: no term in warm-up
    x, term = solve("augmented-lagrangian", steps=1100, warmup_steps=300, init_multiplier=1.0)
    assert x == pytest.approx(1.0, abs=0.06) and term.multipliers["x_at_most_one"] > 1.0


def test_penalty_with_a_small_weight_does_not_satisfy_the_constraint():
    # stationary point of (x-2)^2 + 0.5 relu(x-1): x = 2 - 0.25
    x, term = solve("penalty", scale=0.5)
    assert x == pytest.approx(1.75, abs=0.01)
    assert term.multipliers["x_at_most_one"] == 0.5  # fixed, never updated


def test_history_logs_multiplier_trajectory_and_plots(tmp_path):
    _, term = solve("lagrangian", steps=200, dual_lr=0.5)
    mult = [r["x_at_most_one/multiplier"] for r in term.history]
    assert len(mult) == 200 and mult[0] == 0.0 and mult[-1] > 1.0
    assert all(b >= a for a, b in zip(mult, mult[1:]))  # violations >= 0: lambda never falls
    paths = term.write_history(tmp_path)
    saved = json.loads(paths[0].read_text())
    assert saved["summary"]["formulation"] == "lagrangian"
    assert saved["history"][-1]["x_at_most_one/multiplier"] == mult[-1]
    assert paths[1].suffix == ".png" and paths[1].stat().st_size > 1000


def test_nan_violation_stops_naming_constraint_and_step():
    model = Point(start=0.5)
    cs = ConstraintSet([AtMostOne("x_at_most_one", poison_below=0.9)], "cost")
    term = make_formulation("lagrangian", cs)
    with pytest.raises(TrainingError, match=r"constraint `x_at_most_one`: violation became `nan` "
                                            r"at step 7"):
        term(model, None, 7)


def test_bad_formulation_name_and_settings():
    cs = ConstraintSet([AtMostOne("c")], "cost")
    with pytest.raises(SpecError, match=r"unknown formulation `lagrange`; valid formulations: "
                                        r"`augmented-lagrangian`, `lagrangian`, `penalty`"):
        make_formulation("lagrange", cs)
    with pytest.raises(SpecError, match=r"`dual_lr` must be a finite number > 0, got `-1`"):
        make_formulation("lagrangian", cs, dual_lr=-1)
    with pytest.raises(SpecError, match=r"formulation `penalty` got an unknown setting.*valid "
                                        r"settings:.*`scale`"):
        make_formulation("penalty", cs, dual_lr=0.1)
    with pytest.raises(SpecError, match=r"budget names unknown constraint `d`"):
        make_formulation("lagrangian", cs, budget={"d": 0.1})
