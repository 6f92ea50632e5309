"""Constraint formulations inside the real training loop (contract 2) and the CLI-facing calls."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gridtune.constraints import constraint_report, evaluate_constraints, training_term
from gridtune.core.trainer import TrainConfig, fit, make_loader
from gridtune.errors import SpecError, TrainingError

SPEC = """
[[constraint]]
kind = "monotonic"
name = "monotone_load"
output = "p_infeasible"
direction = "load"
tolerance = 1e-4
"""


class BumpTask:
    """BCE on `y_infeasible`; the score is accuracy."""

    name = "feasibility"

    def loss(self, output, batch):
        return F.binary_cross_entropy_with_logits(output, batch.y_infeasible)

    def target(self, batch):
        return batch.y_infeasible

    def metrics(self, outputs, targets):
        return {"accuracy": float(((outputs > 0).float() == targets).float().mean())}

    def val_score(self, metrics):
        return metrics["accuracy"]


@pytest.fixture(scope="module")
def bump_data(case9_grid, make_graphs):
    """Labels that violate physics on purpose: 'infeasible' only in a middle band of load."""
    graphs = make_graphs(case9_grid, 48, seed=1)
    for g in graphs:
        g.y_infeasible = torch.tensor([1.0 if 0.9 < float(g.load_scale) < 1.3 else 0.0])
    return graphs


def train(graphs, tiny_net, extra_loss=None):
    torch.manual_seed(0)
    model = tiny_net("feasibility")
    loader = make_loader(graphs, 16, shuffle=True, seed=0)
    fit(model, loader, None, BumpTask(), TrainConfig(epochs=40, lr=1e-2, seed=0),
        extra_loss=extra_loss)
    return model


def test_lagrangian_makes_the_model_monotone_where_unconstrained_is_not(bump_data, tiny_net,
                                                                        tmp_path):
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC)
    eval_loader = make_loader(bump_data, 48, shuffle=False)
    free = train(bump_data, tiny_net)
    before = constraint_report(free, eval_loader, spec, "feasibility")["monotone_load"]
    term = training_term(spec, "feasibility", "lagrangian", dual_lr=10.0, dual_signal="rate")
    constrained = train(bump_data, tiny_net, extra_loss=term)
    after = constraint_report(constrained, eval_loader, spec, "feasibility")["monotone_load"]
    assert before["violation_rate"] > 0.2  # the bump was learnt: P falls past the band
    assert after["violation_rate"] <= 0.05
    assert after["mean_violation"] < before["mean_violation"] / 20
    assert term.multipliers["monotone_load"] > 0
    assert before["n_samples"] == 48 and before["tolerance"] == 1e-4
    paths = term.write_history(tmp_path)
    assert [p.name for p in paths] == ["constraint_history.json", "constraint_multipliers.png"]


def test_gradient_method_evaluates_without_weight_graph(bump_data, tiny_net, tmp_path):
    spec = tmp_path / "mono_grad.toml"
    spec.write_text(SPEC.replace('tolerance', 'method = "gradient"\ntolerance'))
    model = tiny_net("feasibility")
    with torch.no_grad():  # evaluation code paths often run under no_grad
        rep = constraint_report(model, make_loader(bump_data, 16, shuffle=False), spec,
                                "feasibility")["monotone_load"]
    assert rep["n_samples"] == 48 and math.isfinite(rep["mean_violation"])
    assert all(p.grad is None for p in model.parameters())


def test_nan_violation_inside_fit_stops_with_constraint_and_step(bump_data, tiny_net, tmp_path):
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC)
    term = training_term(spec, "feasibility", "penalty")
    calls = {"n": 0}

    def poisoned(model, batch, step):
        calls["n"] += 1
        if calls["n"] == 3:
            batch = batch.clone()
            batch.x = batch.x * float("nan")
        return term(model, batch, step)

    with pytest.raises(TrainingError, match=r"constraint `monotone_load`: violation became `nan` "
                                            r"at step 2"):
        train(bump_data, tiny_net, extra_loss=poisoned)


def test_mean_signal_lagrangian_also_reduces_violation(bump_data, tiny_net, tmp_path):
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC)
    loader = make_loader(bump_data, 48, shuffle=False)
    free = constraint_report(train(bump_data, tiny_net), loader, spec, "feasibility")
    term = training_term(spec, "feasibility", "lagrangian", dual_lr=1000.0)
    model = train(bump_data, tiny_net, extra_loss=term)
    after = constraint_report(model, loader, spec, "feasibility")
    assert after["monotone_load"]["mean_violation"] < free["monotone_load"]["mean_violation"] / 10


def test_training_term_takes_spec_formulation_and_cli_override(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[formulation]\nname = "penalty"\n[formulation.penalty]\nscale = 3.0\n'
                    '[formulation.lagrangian]\ndual_lr = 0.7\n' + SPEC)
    assert training_term(spec, "feasibility").name == "penalty"
    assert training_term(spec, "feasibility").multipliers["monotone_load"] == 3.0
    lag = training_term(spec, "feasibility", "lagrangian")
    assert lag.name == "lagrangian" and lag.dual_lr == 0.7
    with pytest.raises(SpecError, match=r"unknown formulation `admm`"):
        training_term(spec, "feasibility", "admm")


def test_evaluate_constraints_counts_tolerance(bump_data, tiny_net):
    from gridtune.constraints.base import ConstraintSet
    from gridtune.constraints.monotonic import Monotonic

    torch.manual_seed(0)
    model = tiny_net("feasibility")
    loader = make_loader(bump_data, 16, shuffle=False)
    loose = evaluate_constraints(model, loader, ConstraintSet([Monotonic("m", tolerance=1.0)],
                                                              "feasibility"))["m"]
    strict = evaluate_constraints(model, loader, ConstraintSet([Monotonic("m", tolerance=0.0)],
                                                               "feasibility"))["m"]
    assert loose["violation_rate"] == 0.0  # probabilities never move by 1
    assert strict["mean_violation"] == loose["mean_violation"]
    assert strict["violation_rate"] >= loose["violation_rate"]


def test_validation_penalty_is_multiplier_times_val_violation(bump_data, tiny_net, tmp_path):
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC)
    torch.manual_seed(0)
    model = train(bump_data, tiny_net)
    loader = make_loader(bump_data, 48, shuffle=False)
    term = training_term(spec, "feasibility", "penalty", scale=4.0)
    mean = constraint_report(model, loader, spec, "feasibility")["monotone_load"]["mean_violation"]
    assert mean > 0
    assert term.validation_penalty(model, loader) == pytest.approx(4.0 * mean)


FIXED_EPS = SPEC + "random_eps = false\n"


def test_use_data_draws_constraint_batches_from_unlabelled_graphs(bump_data, tiny_net, tmp_path,
                                                                 case9_grid, make_graphs):
    spec = tmp_path / "mono.toml"
    spec.write_text(FIXED_EPS)
    model = train(bump_data, tiny_net)
    # unlabelled graphs at loads the labelled ones never reach: the term must see these
    extra = make_graphs(case9_grid, 8, seed=5)
    term = training_term(spec, "feasibility", "penalty", scale=1.0)
    term.use_data(make_loader(extra, 4, shuffle=False))
    labelled = next(iter(make_loader(bump_data, 16, shuffle=False)))
    for step in range(3):  # 2 batches of 4, then the loader starts again
        term(model, labelled, step)
    expected = [evaluate_constraints(model, [b], term.constraint_set)["monotone_load"]
                for b in make_loader(extra, 4, shuffle=False)]
    got = [r["monotone_load/mean_violation"] for r in term.history]
    assert got == pytest.approx([e["mean_violation"] for e in (*expected, expected[0])])
    on_labelled = evaluate_constraints(model, [labelled], term.constraint_set)["monotone_load"]
    assert on_labelled["mean_violation"] != pytest.approx(got[0])


def test_validation_violation_is_rate_excess_and_nan_in_warmup(bump_data, tiny_net, tmp_path):
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC + "\n[formulation.lagrangian]\ntarget_rate = {monotone_load = 0.1}\n"
                    "warmup_steps = 2\n")
    model = train(bump_data, tiny_net)  # unconstrained: the bump makes >20% of pairs violate
    loader = make_loader(bump_data, 48, shuffle=False)
    rate = constraint_report(model, loader, spec, "feasibility")["monotone_load"]["violation_rate"]
    term = training_term(spec, "feasibility", "lagrangian")
    batch = next(iter(loader))
    term(model, batch, 0)
    assert math.isnan(term.validation_violation(model, loader))
    term(model, batch, 2)
    assert term.validation_violation(model, loader) == pytest.approx(rate - 0.1)
    # its own validation data, when given, replaces the loader fit passes
    term.use_data(loader, [next(iter(make_loader(bump_data[:1], 1, shuffle=False)))])
    assert term.validation_violation(model, loader) in (0.0, pytest.approx(0.9))
    with pytest.raises(SpecError, match="target_rate names unknown constraint `nope`"):
        training_term(spec, "feasibility", "lagrangian", target_rate={"nope": 0.1})


def test_finetune_feeds_unlabelled_scenarios_to_the_constraint_term(tmp_path):
    from gridtune.workflows.transfer import finetune
    from tests.nn.synthetic import graphs, tiny_checkpoint

    tiny_checkpoint(tmp_path / "src", name="case9", n=40, epochs=1)
    spec = tmp_path / "mono.toml"
    spec.write_text(SPEC)
    cfg = TrainConfig(epochs=2, patience=2)
    r = finetune(tmp_path / "src", graphs("case14", 80, seed=1), labels=20, strategy="full",
                 unlabeled=15, out_dir=tmp_path / "ft", train=cfg, constraints=spec,
                 with_scratch=False, save=False)
    hist = json.loads((tmp_path / "ft" / "history.json").read_text())
    # constrained checkpoint selection ran on the held-back fifth of the unlabelled draw (3 graphs)
    assert all(0.0 <= h["val_violation"] <= 1.0 for h in hist)
    assert {h["val_violation"] * 3 for h in hist} <= {0.0, 1.0, 2.0, 3.0}
    steps = json.loads((tmp_path / "ft" / "constraint_history.json").read_text())["history"]
    assert len(steps) == r.epochs_run * 4  # one row a step (16 labels, batches of 4)
