"""Formulations: how a `ConstraintSet` becomes a term of the training loss.

A formulation is the `extra_loss(model, batch, step) -> Tensor` hook of `gridtune.core.trainer.fit`
(an extra loss term): each call computes every constraint's per-sample violation on the batch, forms the
batch constraint value g_c = mean(v_c) - budget_c, returns its loss term, updates its multipliers
and appends one row to `history`.

    penalty               sum_c w_c * g_c                                  (fixed weights)
    lagrangian            sum_c lambda_c * g_c ;  lambda_c <- max(0, lambda_c + eta * g_c)
    augmented-lagrangian  sum_c (max(0, lambda_c + rho g_c)^2 - lambda_c^2) / (2 rho) ;
                          lambda_c <- max(0, lambda_c + rho g_c), rho <- min(rho_max, rho * growth)

The Lagrangian is the primal-dual gradient method for inequality constraints g_c <= 0 (Arrow,
Hurwicz and Uzawa 1958); the augmented form is the method of multipliers for inequalities
(Bertsekas 1982, "Constrained optimization and Lagrange multiplier methods", ch. 3). Multipliers
are updated after the term is formed (simultaneous gradient descent-ascent), so the term always
uses the multipliers the step started with.

Violations are one-sided (>= 0), so with a zero budget g_c never goes negative and a multiplier
never falls: it settles at or above the optimal one and the iterates chatter around the boundary
with an amplitude of about learning rate x multiplier. A small positive budget (the constraint
level of Chamon and Ribeiro 2020, "Probably approximately correct constrained learning") lets the
multiplier come down and converge to its optimum.

Units. A violation carries its constraint's units (a drop in probability, p.u. of power), and
the multipliers carry their inverse. Scaling a violation by s leaves the Lagrangian unchanged when
lambda scales by 1/s and the dual step by 1/s^2; the augmented Lagrangian's dual step is its
penalty rho, so rho must scale by 1/s^2 too. With rho ~ 1 on violations of ~1e-3 (monotonicity of
a probability, case30 -> case118) the multiplier grew to 0.19 in 160 steps and the term did
nothing: the benchmark measured more violations than unconstrained fine-tuning (10.4% against
9.0%, one seed). Specs therefore give every formulation its own settings in the violation's units.

Why not Cooper (cooper-optim 1.0.1): its constrained optimizers own the primal step
(`roll()` zeroes grads, back-propagates and steps the primal optimizer), while gridtune keeps
the optimizer, gradient clipping and early stopping in `fit`; using only Cooper's multipliers would
take more code than the dual ascent below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gridtune.constraints.base import ConstraintSet
from gridtune.errors import SpecError, choices_text
from gridtune.files import write_json

FORMULATIONS = ("penalty", "lagrangian", "augmented-lagrangian")
WARMUP_PENALTY = 1e6  # validation penalty of a model still in warm-up (never met the constraint)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise SpecError(f"formulation setting `{name}` must be a finite number {bound}, got `{value}`")
    return float(value)


class Formulation:
    """Base: violations -> loss term, with multiplier bookkeeping and a history.

    Args:
        constraint_set: the constraints.
        budget: per-constraint allowed mean violation (default: 0 for all): g_c = mean(v_c) - b_c.
        log_every: keep one history row every this many steps (default: 1).
        warmup_steps: training steps before the constraint joins the loss (default: 0). Until
            then the term is 0 and multipliers stay put, so the task is fitted first: a model
            far from the data (fine-tuning start, system balance off by 10 p.u.) otherwise
            drives the multipliers up on violations the task loss would remove anyway
            (measured: lambda 2469 and 6x the OPF MAE, case30 -> case118). Model selection
            prefers any later epoch (`validation_penalty` is `WARMUP_PENALTY` there, a constant
            that keeps warm-up epochs in task-score order, so early stopping still sees progress).
        target_rate: per-constraint violation rate on held-out data that counts as meeting the
            constraint when a checkpoint is selected (`validation_violation`; default: 0).

    Data. By default the constraints are evaluated on the training batch. Constraints need no
    labels, so `use_data(train, val)` can hand the formulation its own (unlabelled) batches: the
    term then draws its batch from `train` (cycled) and checkpoint selection checks `val`. With
    200 labels, satisfaction learnt on the 160 training graphs did not carry over to held-out
    ones (monotonicity benchmark: 3.2% of held-out pairs violating).
    """

    name = ""
    _init_multiplier = 0.0  # set by the formulations whose multipliers are learnt

    def __init__(self, constraint_set: ConstraintSet, *, budget: dict[str, float] | None = None,
                 log_every: int = 1, warmup_steps: int = 0,
                 target_rate: dict[str, float] | None = None) -> None:
        self.constraint_set = constraint_set
        budget = dict(budget or {})
        unknown = set(budget) - set(constraint_set.names)
        if unknown:
            raise SpecError(f"formulation budget names unknown constraint `{sorted(unknown)[0]}`; "
                            f"constraints: {choices_text(constraint_set.names)}")
        self.budget = {c: _positive(f"budget.{c}", budget.get(c, 0.0), allow_zero=True)
                       for c in constraint_set.names}
        target_rate = dict(target_rate or {})
        unknown = set(target_rate) - set(constraint_set.names)
        if unknown:
            raise SpecError(f"formulation target_rate names unknown constraint "
                            f"`{sorted(unknown)[0]}`; constraints: {choices_text(constraint_set.names)}")
        self.target_rate = {c: _positive(f"target_rate.{c}", target_rate.get(c, 0.0),
                                         allow_zero=True) for c in constraint_set.names}
        self._data: Any = None
        self._data_iter: Any = None
        self._val_data: Any = None
        if log_every < 1:
            raise SpecError(f"formulation setting `log_every` must be >= 1, got `{log_every}`")
        self.log_every = int(log_every)
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise SpecError(f"formulation setting `warmup_steps` must be an integer >= 0, got "
                            f"`{warmup_steps}`")
        self.warmup_steps = warmup_steps
        self._in_warmup = warmup_steps > 0
        self.multipliers: dict[str, float] = {c: 0.0 for c in constraint_set.names}
        self.history: list[dict[str, float]] = []

    # -- the hook ------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, batch: Any, step: int) -> Tensor:
        self._in_warmup = step < self.warmup_steps
        active_in_warmup = self.warmup_term_active()
        if self._in_warmup and not active_in_warmup and step % self.log_every != 0:
            return torch.zeros(())
        if self._data is not None:
            batch = self._next_batch()
        viol = self.constraint_set.violations(model, batch, train=True, step=step)
        g = {c: v.mean() - self.budget[c] for c, v in viol.items()}
        term = self.term(g) if not self._in_warmup or active_in_warmup else torch.zeros(())
        if step % self.log_every == 0:
            row: dict[str, float] = {"step": float(step)}
            tol = {c.name: c.tolerance for c in self.constraint_set}
            for c, v in viol.items():
                row[f"{c}/mean_violation"] = float(v.detach().mean())
                row[f"{c}/violation_rate"] = float((v.detach() > tol[c]).double().mean())
                row[f"{c}/multiplier"] = self.multipliers[c]
            row.update(self.extra_log())
            self.history.append(row)
        if not self._in_warmup:
            self.update({c: self.dual_value(c, v) for c, v in viol.items()})
        return term

    def term(self, g: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def warmup_term_active(self) -> bool:
        """Whether the term is in the loss during warm-up (at the multipliers it starts with; the
        dual steps wait for the warm-up to end): when a formulation with multipliers starts them
        above zero (`init_multiplier`). Otherwise no term until then."""
        return self._init_multiplier > 0

    # -- data ----------------------------------------------------------------------------------
    def use_data(self, train: Any, val: Any | None = None) -> None:
        """Evaluate the constraints on batches from `train` (re-iterated when exhausted) instead
        of the labelled training batch, and select checkpoints on `val` when given."""
        self._data, self._data_iter, self._val_data = train, None, val

    def _next_batch(self) -> Any:
        if self._data_iter is not None:
            batch = next(self._data_iter, None)
            if batch is not None:
                return batch
        self._data_iter = iter(self._data)
        batch = next(self._data_iter, None)
        if batch is None:
            raise SpecError("the constraint data loader yielded no batches")
        return batch

    def dual_value(self, name: str, v: Tensor) -> float:
        """The constraint value the dual step ascends on: mean(v) - budget."""
        return float(v.detach().mean()) - self.budget[name]

    def update(self, g: dict[str, float]) -> None:
        """Dual step after the term is formed (no-op for the penalty)."""

    def extra_log(self) -> dict[str, float]:
        return {}

    # -- model selection -----------------------------------------------------------------------
    def validation_penalty(self, model: nn.Module, loader: Any) -> float:
        """sum_c multiplier_c * mean validation violation_c, with the current multipliers.

        Early stopping on the task score alone picks an early epoch, before the multipliers have
        grown (measured on case14 nodal balance: best epoch 0 of 60). Selecting on
        `task score - validation_penalty` (the Lagrangian on the validation split) keeps the
        constraint in the choice.
        """
        from gridtune.constraints.metrics import evaluate_constraints

        if self._in_warmup:
            return WARMUP_PENALTY
        data = self._val_data if self._val_data is not None else loader
        rep = evaluate_constraints(model, data, self.constraint_set)
        return float(sum(self.multipliers[c] * rep[c]["mean_violation"] for c in rep))

    def validation_violation(self, model: nn.Module, loader: Any) -> float:
        """How far the model is from its target violation rates on held-out data: the sum over
        constraints of max(0, violation_rate_c - target_rate_c); 0 = within target. NaN during
        warm-up (not enforced yet). Checked on the formulation's own validation data when
        `use_data` gave some, else on `loader`. This is `fit`'s `val_violation` hook
        (constrained model selection)."""
        from gridtune.constraints.metrics import evaluate_constraints

        if self._in_warmup:
            return math.nan
        data = self._val_data if self._val_data is not None else loader
        rep = evaluate_constraints(model, data, self.constraint_set)
        return float(sum(max(0.0, rep[c]["violation_rate"] - self.target_rate[c]) for c in rep))

    # -- outputs -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {"formulation": self.name, "multipliers": dict(self.multipliers),
                "budget": dict(self.budget), "target_rate": dict(self.target_rate),
                **self.extra_log()}

    def write_history(self, out_dir: str | Path, *, plot: bool = True) -> list[Path]:
        """Write `constraint_history.json` (and `constraint_multipliers.png`) into `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "constraint_history.json"]
        write_json(paths[0], {"summary": self.summary(), "history": self.history}, indent=1)
        if plot and self.history:
            paths.append(plot_history(self.history, self.constraint_set.names,
                                      out / "constraint_multipliers.png", title=self.name))
        return paths


def plot_history(history: list[dict[str, float]], names: list[str], path: Path, *,
                 title: str = "") -> Path:
    """Multiplier and mean-violation trajectories, one colour per constraint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, (ax_m, ax_v) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for c in names:
        ax_m.plot(steps, [r[f"{c}/multiplier"] for r in history], label=c)
        ax_v.plot(steps, [r[f"{c}/mean_violation"] for r in history], label=c)
    ax_m.set_ylabel("multiplier")
    ax_v.set_ylabel("mean violation (batch)")
    ax_v.set_yscale("symlog", linthresh=1e-4)
    ax_v.set_xlabel("step")
    ax_m.legend(fontsize=8)
    ax_m.set_title(f"constraint formulation: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class Penalty(Formulation):
    """Fixed weights: each constraint's `weight` times `scale` (default: 1)."""

    name = "penalty"

    def __init__(self, constraint_set: ConstraintSet, *, scale: float = 1.0, **kw: Any) -> None:
        super().__init__(constraint_set, **kw)
        scale = _positive("scale", scale, allow_zero=True)
        self.multipliers = {c.name: c.weight * scale for c in constraint_set}

    def term(self, g: dict[str, Tensor]) -> Tensor:
        return sum(self.multipliers[c] * val for c, val in g.items())  # type: ignore[return-value]


class Lagrangian(Formulation):
    """Multipliers by projected dual ascent.

    Args:
        dual_lr: dual step size eta; a constraint's `weight` scales its own step (default: 0.1).
        init_multiplier: starting lambda (default: 0). With `warmup_steps`, a positive value
            keeps the term in the loss at this multiplier during warm-up (the dual steps start
            after it), so the optimiser's statistics include the constraint from the first step.
            Adam normalises each parameter's step by its gradient history; a term that joins
            after warm-up meets parameters whose task gradients have gone quiet and moves them
            by whole learning-rate steps at once (measured, OPF system balance case30 -> case118:
            the pool's mean violation went from 0.01 p.u. at lambda 1 to 2.1 p.u. eight steps
            later at lambda 2.8).
        dual_signal: what the dual step ascends on. `mean` (default): g_c = mean(v_c) - budget_c,
            the textbook Lagrangian. `rate`: the batch violation rate (share of samples with
            v_c > tolerance) minus budget_c, while the primal term stays lambda_c * mean(v_c):
            the proxy-Lagrangian of Cotter, Jiang and Sridharan 2019 ("Two-player games for
            efficient non-convex constrained optimization"). The rate is what evaluation
            reports and does not shrink with the violation's units, so the multiplier keeps
            growing while a few samples still violate (budget is then an allowed rate).
    """

    name = "lagrangian"

    def __init__(self, constraint_set: ConstraintSet, *, dual_lr: float = 0.1,
                 init_multiplier: float = 0.0, dual_signal: str = "mean", **kw: Any) -> None:
        super().__init__(constraint_set, **kw)
        self.dual_lr = _positive("dual_lr", dual_lr)
        init = _positive("init_multiplier", init_multiplier, allow_zero=True)
        if dual_signal not in ("mean", "rate"):
            raise SpecError(f"formulation setting `dual_signal` must be one of `mean`, `rate`, "
                            f"got `{dual_signal}`")
        self.dual_signal = dual_signal
        self._init_multiplier = init
        self.multipliers = {c: init for c in constraint_set.names}
        self._step = {c.name: self.dual_lr * c.weight for c in constraint_set}
        self._tol = {c.name: c.tolerance for c in constraint_set}

    def term(self, g: dict[str, Tensor]) -> Tensor:
        return sum(self.multipliers[c] * val for c, val in g.items())  # type: ignore[return-value]

    def dual_value(self, name: str, v: Tensor) -> float:
        if self.dual_signal == "rate":
            return float((v.detach() > self._tol[name]).double().mean()) - self.budget[name]
        return float(v.detach().mean()) - self.budget[name]

    def update(self, g: dict[str, float]) -> None:
        for c, val in g.items():
            self.multipliers[c] = max(0.0, self.multipliers[c] + self._step[c] * val)


class AugmentedLagrangian(Formulation):
    """Method of multipliers for inequalities, with a growing quadratic penalty.

    rho is both the penalty and the dual step, so it is in the inverse squared units of the
    violation (module docstring, "Units"): the defaults suit violations of order 1.

    Args:
        penalty_init: starting rho (default: 1).
        penalty_growth: rho is multiplied by this every `growth_every` steps (default: 1.01).
        penalty_max: cap on rho (default: 100); keep lr * rho * curvature well below 2, or
            the primal step turns unstable.
        growth_every: steps between growths (default: 10).
        init_multiplier: starting lambda (default: 0). With `warmup_steps`, a positive value
            keeps the term in the loss during warm-up at this lambda and `penalty_init`, the dual
            and rho frozen (as `Lagrangian`'s, for the same reason: Adam's statistics).
    """

    name = "augmented-lagrangian"

    def __init__(self, constraint_set: ConstraintSet, *, penalty_init: float = 1.0,
                 penalty_growth: float = 1.01, penalty_max: float = 100.0, growth_every: int = 10,
                 init_multiplier: float = 0.0, **kw: Any) -> None:
        super().__init__(constraint_set, **kw)
        self.rho = _positive("penalty_init", penalty_init)
        self.penalty_growth = _positive("penalty_growth", penalty_growth)
        if self.penalty_growth < 1:
            raise SpecError(f"formulation setting `penalty_growth` must be >= 1, got "
                            f"`{penalty_growth}`")
        self.penalty_max = max(_positive("penalty_max", penalty_max), self.rho)
        if growth_every < 1:
            raise SpecError(f"formulation setting `growth_every` must be >= 1, got `{growth_every}`")
        self.growth_every = int(growth_every)
        init = _positive("init_multiplier", init_multiplier, allow_zero=True)
        self._init_multiplier = init
        self.multipliers = {c: init for c in constraint_set.names}
        self._weight = {c.name: c.weight for c in constraint_set}
        self._calls = 0

    def term(self, g: dict[str, Tensor]) -> Tensor:
        rho = self.rho
        total: Tensor | float = 0.0
        for c, val in g.items():
            lam = self.multipliers[c]
            shifted = torch.relu(lam + rho * self._weight[c] * val)
            total = total + (shifted * shifted - lam * lam) / (2 * rho)
        return total  # type: ignore[return-value]

    def update(self, g: dict[str, float]) -> None:
        for c, val in g.items():
            self.multipliers[c] = max(0.0, self.multipliers[c] + self.rho * self._weight[c] * val)
        self._calls += 1
        if self._calls % self.growth_every == 0:
            self.rho = min(self.penalty_max, self.rho * self.penalty_growth)

    def extra_log(self) -> dict[str, float]:
        return {"penalty_rho": self.rho}


_CLASSES: dict[str, type[Formulation]] = {
    "penalty": Penalty, "lagrangian": Lagrangian, "augmented-lagrangian": AugmentedLagrangian,
}


def make_formulation(name: str, constraint_set: ConstraintSet, **kw: Any) -> Formulation:
    """Build formulation `name` over `constraint_set`.

    Settings from the spec's `[formulation.<name>]` table are used first; keyword arguments
    override them. Unknown names or settings raise `SpecError` listing the valid ones.
    """
    if name not in _CLASSES:
        raise SpecError(f"unknown formulation `{name}`; valid formulations: "
                        f"{choices_text(FORMULATIONS)}")
    settings = dict(constraint_set.formulation.get(name, {}))
    settings.update(kw)
    cls = _CLASSES[name]
    try:
        return cls(constraint_set, **settings)
    except TypeError as exc:
        import inspect

        valid = [p for c in (cls, Formulation) for p in inspect.signature(c.__init__).parameters
                 if p not in ("self", "constraint_set", "kw")]
        raise SpecError(f"formulation `{name}` got an unknown setting ({exc}); valid settings: "
                        f"{choices_text(set(valid))}") from None
