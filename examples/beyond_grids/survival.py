"""Survival: fine-tune a pre-trained encoder on a small censored cohort with the Cox loss.

A source registry (many patients, a related disease) and a small target cohort share most of
their risk biology: the log-hazard is a non-linear function of 16 covariates whose first part is
common to both, plus a target-specific term; baseline hazards and censoring differ, and target
times are recorded in whole months (tied event times, handled with Efron's method). An MLP is
pre-trained on the source with `gridtune.core.survival.CoxTask` and adapted to the target with
the core's strategies (linear probe, full fine-tuning, L2-SP), each beside the same MLP trained
from scratch on the same patients, at two cohort sizes. A linear Cox model fitted on the target
cohort (the same loss on a linear risk) is the classical reference. Harrell's C on a large
held-out target cohort is the metric.

    python examples/beyond_grids/survival.py            # under a minute
    python examples/beyond_grids/survival.py --quick    # smoke run
"""

from __future__ import annotations

import numpy as np
import torch
from _common import (
    Timer,
    batches,
    comparison_lines,
    parser,
    pretrain,
    results_table,
    run_strategy,
    setup,
    write_json,
)
from torch import Tensor, nn

from gridtune.core.survival import CoxTask, concordance_index
from gridtune.core.trainer import TrainConfig, evaluate, fit, predict

N_FEATURES = 16


def log_hazard(x: np.ndarray, cohort: str) -> np.ndarray:
    shared = (1.0 * np.tanh(x[:, 0] + x[:, 1]) + 0.6 * x[:, 2] * x[:, 3] + 0.7 * np.sin(2 * x[:, 4])
              - 0.5 * np.abs(x[:, 5]) + 0.4 * x[:, 6])
    if cohort == "source":
        return shared + 0.3 * x[:, 7]
    return shared + 0.5 * np.maximum(x[:, 8], 0) - 0.4 * x[:, 9]


def cohort(n: int, which: str, seed: int) -> list[tuple[Tensor, Tensor]]:
    """`n` patients: covariates (16,) and (time, event); about 40 % censored."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    if which == "target":
        x[:, :4] = x[:, :4] * 1.2 + 0.3  # a sicker, more varied population
    shape, scale = (1.5, 20.0) if which == "source" else (1.2, 12.0)
    u = rng.uniform(size=n)
    t_event = scale * (-np.log(u) / np.exp(log_hazard(x, which))) ** (1 / shape)  # Weibull PH
    t_censor = rng.uniform(0, 3 * scale, n)
    t = np.minimum(t_event, t_censor)
    e = (t_event <= t_censor).astype(np.float32)
    if which == "target":
        t = np.ceil(t)  # whole months: tied times
    y = np.stack([t, e], axis=1).astype(np.float32)
    return list(zip(torch.tensor(x, dtype=torch.float32), torch.from_numpy(y), strict=True))


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, h: Tensor) -> Tensor:
        return torch.relu(self.lin(h))


class Encoder(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class RiskMLP(nn.Module):
    """Covariates (B, 16) -> (B, 32) -> log relative risk (B,) (a `TransferModel`)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder((N_FEATURES, 64, 32))
        self.embed_dim = 32
        self.head = nn.Linear(32, 1)

    def embed(self, batch) -> Tensor:
        return self.encoder(batch[0])

    def forward(self, batch) -> Tensor:
        return self.head(self.embed(batch)).squeeze(-1)


class LinearCox(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, 1, bias=False)

    def forward(self, batch) -> Tensor:
        return self.lin(batch[0]).squeeze(-1)


def c_index(out: Tensor, y: Tensor) -> float:
    return concordance_index(out, y[:, 0], y[:, 1])


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seeds = setup(args, default_seeds=5)
    clock = Timer()
    q = args.quick
    n_source, n_test = (1000, 500) if q else (4000, 2000)
    sizes = [60] if q else [60, 240]
    task = CoxTask(ties="efron")
    source = cohort(n_source, "source", 1)
    src_val = cohort(n_source // 4, "source", 2)
    test = cohort(n_test, "target", 4)
    test_loader = batches(test, len(test), shuffle=False)
    torch.manual_seed(0)
    model = RiskMLP()
    pretrain(model, batches(source, 256, shuffle=True), batches(src_val, len(src_val), shuffle=False),
             task, TrainConfig(epochs=10 if q else 40, lr=3e-3, patience=8, seed=0))
    src_c = evaluate(model, batches(src_val, len(src_val), shuffle=False), task)["c_index"]
    zero_shot = evaluate(model, test_loader, task)["c_index"]
    y_test = torch.stack([y for _, y in test])
    cens = 1 - float(y_test[:, 1].mean())
    ceiling = concordance_index(log_hazard(torch.stack([x for x, _ in test]).numpy(), "target"),
                                y_test[:, 0], y_test[:, 1])
    print(f"pre-trained on {n_source} source patients: source C {src_c:.3f}; on the target "
          f"without adaptation C {zero_shot:.3f}; the true target log-hazard scores C "
          f"{ceiling:.3f} (the ceiling); target censoring {cens:.0%} ({clock})")

    strategies = {"scratch": {}, "linear-probe": {}, "full": {}, "l2sp": {"alpha": 0.1}}
    payload = {"zero_shot_c_index": zero_shot, "source_c_index": src_c, "ceiling_c_index": ceiling,
               "sizes": {}}
    for size in sizes:
        scores: dict[str, list[float]] = {k: [] for k in strategies}
        linear: list[float] = []
        for seed in seeds:
            patients = cohort(size, "target", 100 + seed)
            n_tr = size * 2 // 3
            tr = batches(patients[:n_tr], n_tr, shuffle=True, seed=seed)
            va = batches(patients[n_tr:], size - n_tr, shuffle=False)
            cfg = TrainConfig(epochs=60 if q else 150, lr=3e-3, patience=25, seed=seed,
                              weight_decay=1e-3)
            for name, opts in strategies.items():
                c, _, _ = run_strategy(model, name, tr, va, test_loader, task, cfg, c_index, **opts)
                scores[name].append(c)
            torch.manual_seed(seed)
            lin = LinearCox()
            fit(lin, tr, va, task, cfg)
            linear.append(c_index(*predict(lin, test_loader, task)))
        text, summary = results_table(scores, "C-index",
                                      title=f"target cohort: {size} patients ({n_tr} train + "
                                            f"{size - n_tr} validation), test: {n_test}")
        extra, versus = comparison_lines(scores, ["full", "l2sp"], "linear-probe", "C-index")
        lin_m = np.mean(linear)
        text += (f"\nlinear Cox on the target cohort alone: C {lin_m:.3f}; source model without "
                 f"adaptation: C {zero_shot:.3f}\nfine-tuning the encoder against the linear probe:\n"
                 + extra)
        print(text + f"\n({clock})\n")
        summary["linear_cox"] = {"values": linear, "mean": lin_m}
        summary["versus_linear_probe"] = versus
        payload["sizes"][str(size)] = summary
    write_json(args.out / "survival.json", payload)
    plot(payload, sizes, list(strategies), args.out / "survival.png")
    print(f"wrote {args.out / 'survival.png'} and survival.json; total {clock}")


def plot(payload: dict, sizes: list[int], names: list[str], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / (len(names) + 1)
    for i, name in enumerate([*names, "linear_cox"]):
        rows = [payload["sizes"][str(s)][name] for s in sizes]
        means = [r["mean"] for r in rows]
        xs = np.arange(len(sizes)) + (i - len(names) / 2) * width
        if "ci" in rows[0]:
            err = np.abs(np.array([[m - r["ci"][0] for m, r in zip(means, rows)],
                                   [r["ci"][1] - m for m, r in zip(means, rows)]]))
            ax.bar(xs, means, width, yerr=np.nan_to_num(err), capsize=3, label=name)
        else:
            ax.bar(xs, means, width, label="linear Cox (target only)", color="grey")
    ax.axhline(payload["zero_shot_c_index"], color="black", ls="--", lw=1,
               label="source model, no adaptation")
    ax.axhline(payload["ceiling_c_index"], color="black", ls=":", lw=1,
               label="true log-hazard (ceiling)")
    ax.set_xticks(range(len(sizes)), [f"{s} target patients" for s in sizes])
    ax.set_ylim(0.5, None)
    ax.set_ylabel("Harrell's C on held-out target patients")
    ax.set_title("Survival: Cox fine-tuning of a pre-trained encoder")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
