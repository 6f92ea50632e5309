"""Study plots (PNG, matplotlib's Agg backend): learning curves, transfer matrix, reliability
diagrams, constraint violations before / after, multiplier trajectories.

Every function takes the results frame (`store.results_frame`) and / or the cell records, writes
one PNG into `out_dir` and returns its path, or returns None when the study holds nothing to draw
(e.g. no constraints: no violation plot).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STRATEGY_MARKERS = "osD^v<>ph*"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def learning_curves(frame: pd.DataFrame, headline: tuple[str, bool], out_dir: Path) -> Path | None:
    """Headline metric against target labels: one panel per (source -> target, constraint),
    one line per strategy plus scratch; the band spans mean +- one std over seeds."""
    metric, higher = headline
    ok = _ok(frame).dropna(subset=[metric])
    if ok.empty:
        return None
    keys = ["source", "target", "constraint", "formulation"]
    panels = list(ok[keys].drop_duplicates().itertuples(index=False, name=None))
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False,
                             layout="constrained")
    strategies = list(dict.fromkeys(ok["strategy"]))
    for ax, key in zip(axes.flat, panels, strict=False):
        source, target, constraint, form = key
        sub = ok[(ok["source"] == source) & (ok["target"] == target)
                 & (ok["constraint"] == constraint) & (ok["formulation"] == form)]
        for i, strategy in enumerate(strategies):
            s = sub[sub["strategy"] == strategy]
            if not s.empty:
                _curve(ax, s, metric, strategy, STRATEGY_MARKERS[i % len(STRATEGY_MARKERS)])
        scratch_col = f"scratch_{metric}"
        if scratch_col in sub and sub[scratch_col].notna().any():
            # one scratch value per (labels, seed): several strategies share it
            sc = sub.dropna(subset=[scratch_col]).drop_duplicates(["labels", "seed"])
            _curve(ax, sc.assign(**{metric: sc[scratch_col]}), metric, "scratch", "x", style="--",
                   color="0.3")
        title = f"{source} -> {target}"
        if constraint != "none":
            title += f"\n{constraint} ({form})"
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log")
        budgets = sorted(sub["labels"].unique())
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("target labels")
        ax.set_ylabel(metric + ("" if higher else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Learning curves (band: mean +- std over seeds)", fontsize=11)
    return _save(fig, out_dir / "learning_curves.png")


def _curve(ax: Any, rows: pd.DataFrame, metric: str, label: str, marker: str, style: str = "-",
           color: Any = None) -> None:
    stats = rows.groupby("labels")[metric].agg(["mean", "std", "count"]).sort_index()
    x = stats.index.to_numpy(dtype=float)
    line = ax.plot(x, stats["mean"], style, marker=marker, label=label, color=color)[0]
    std = stats["std"].fillna(0.0).to_numpy()
    if (stats["count"] > 1).any():
        ax.fill_between(x, stats["mean"] - std, stats["mean"] + std, alpha=0.2,
                        color=line.get_color())


def transfer_matrix(frame: pd.DataFrame, headline: tuple[str, bool], out_dir: Path) -> Path | None:
    """Source x target heatmap of the mean transfer gain (over labels and seeds), per strategy.

    Unconstrained cells only when the study has them, so constraints do not mix into the gain.
    """
    ok = _ok(frame).dropna(subset=["transfer_gain"])
    if (ok["constraint"] == "none").any():
        ok = ok[ok["constraint"] == "none"]
    if ok.empty:
        return None
    plt = _plt()
    strategies = list(dict.fromkeys(ok["strategy"]))
    sources = list(dict.fromkeys(ok["source"]))
    # targets in source order first, so that a symmetric study has its diagonal on the diagonal
    targets = [t for t in dict.fromkeys(list(ok["source"]) + list(ok["target"]))
               if t in set(ok["target"])]
    mats = []
    for strategy in strategies:
        piv = (ok[ok["strategy"] == strategy].pivot_table(index="source", columns="target",
                                                          values="transfer_gain", aggfunc="mean")
               .reindex(index=sources, columns=targets))
        mats.append(piv.to_numpy(dtype=float))
    lim = max(float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0 for m in mats) or 1e-3
    fig, axes = plt.subplots(1, len(strategies), figsize=(1.2 + 1.3 * len(targets) * len(strategies)
                                                          + 1.5, 1.2 + 0.9 * len(sources)),
                             squeeze=False,
                             layout="constrained")
    image = None
    for ax, strategy, mat in zip(axes.flat, strategies, mats, strict=False):
        image = ax.imshow(mat, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
        ax.set_yticks(range(len(sources)), sources)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        ax.set_title(strategy, fontsize=10)
        for i in range(len(sources)):
            for j in range(len(targets)):
                if np.isfinite(mat[i, j]):
                    dark = abs(mat[i, j]) > 0.6 * lim
                    ax.text(j, i, f"{mat[i, j]:+.3f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
    fig.colorbar(image, ax=list(axes.flat), shrink=0.9,
                 label=f"gain in {headline[0]} over scratch")
    fig.suptitle("Transfer matrix: mean gain over scratch (blue: above, red: below; the "
                 "report's verdicts say which differences are beyond seed noise)", fontsize=11)
    return _save(fig, out_dir / "transfer_matrix.png")


def reliability_diagrams(records: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """Observed frequency against predicted probability, pooled over seeds, per target, for the
    largest label budget: one line per strategy (and scratch). Needs `reliability` in records: the
    rows of `gridtune.evaluation.metrics.reliability_table` (`lower`, `count`, `mean_prob`,
    `frac_positive` per non-empty bin)."""
    recs = [r for r in records if r.get("status") == "ok" and r.get("reliability")
            and r["cell"]["constraint"] == "none"] or \
        [r for r in records if r.get("status") == "ok" and r.get("reliability")]
    if not recs:
        return None
    plt = _plt()
    targets = list(dict.fromkeys(r["cell"]["target"] for r in recs))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 4), squeeze=False,
                             layout="constrained")
    for ax, target in zip(axes.flat, targets, strict=False):
        mine = [r for r in recs if r["cell"]["target"] == target]
        top = max(r["cell"]["labels"] for r in mine)
        mine = [r for r in mine if r["cell"]["labels"] == top]
        series: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            series.setdefault(r["cell"]["strategy"], []).append(r["reliability"])
            if r.get("scratch_reliability"):
                series.setdefault("scratch", []).append(r["scratch_reliability"])
        ax.plot([0, 1], [0, 1], ":", color="0.5", label="perfect")
        for i, (name, rels) in enumerate(series.items()):
            x, y = _pool(rels)
            ax.plot(x, y, "--" if name == "scratch" else "-",
                    marker=STRATEGY_MARKERS[i % len(STRATEGY_MARKERS)], label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(infeasible)")
        ax.set_ylabel("observed infeasible share")
        ax.set_title(f"{target}, {top} labels", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Reliability diagrams (pooled over seeds and sources)", fontsize=11)
    return _save(fig, out_dir / "reliability.png")


def _pool(tables: list[list[dict[str, Any]]]) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted pooling of reliability tables over the same bins (keyed by `lower`)."""
    acc: dict[float, list[float]] = {}
    for table in tables:
        for row in table:
            n = float(row["count"])
            a = acc.setdefault(round(float(row["lower"]), 9), [0.0, 0.0, 0.0])
            a[0] += n
            a[1] += n * float(row["mean_prob"])
            a[2] += n * float(row["frac_positive"])
    lowers = sorted(k for k, a in acc.items() if a[0] > 0)
    return (np.array([acc[k][1] / acc[k][0] for k in lowers]),
            np.array([acc[k][2] / acc[k][0] for k in lowers]))


def violations_before_after(records: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """Violation rate of each constraint: unconstrained cells ("before") against each
    formulation ("after"), averaged over cells. Every cell carries `violations_by_set` (its test
    violations of each constraint set of the study); "before" reads the unconstrained ones."""
    after: dict[tuple[str, str, str], list[float]] = {}
    before: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        cell = r["cell"]
        if cell["constraint"] != "none":
            for name, v in (r.get("violations") or {}).items():
                after.setdefault((cell["constraint"], name, cell["formulation"]), []).append(
                    v["violation_rate"])
        by_set = (r.get("violations_by_set") or {}) if cell["constraint"] == "none" else {}
        for cset, viol in by_set.items():
            for name, v in viol.items():
                before.setdefault((cset, name), []).append(v["violation_rate"])
    if not after and not before:
        return None
    plt = _plt()
    sets = list(dict.fromkeys([k[0] for k in after] + [k[0] for k in before]))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.8), squeeze=False,
                             layout="constrained")
    for ax, cset in zip(axes.flat, sets, strict=False):
        names = list(dict.fromkeys([k[1] for k in after if k[0] == cset]
                                   + [k[1] for k in before if k[0] == cset]))
        forms = list(dict.fromkeys(k[2] for k in after if k[0] == cset))
        groups = [("unconstrained", lambda n, cset=cset: before.get((cset, n)))]
        groups += [(f, lambda n, f=f, cset=cset: after.get((cset, n, f))) for f in forms]
        width = 0.8 / len(groups)
        for g, (label, get) in enumerate(groups):
            heights = [float(np.mean(get(n))) if get(n) else np.nan for n in names]
            ax.bar(np.arange(len(names)) + g * width - 0.4 + width / 2, heights, width, label=label)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel("violation rate")
        ax.set_title(cset, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Constraint violations before (unconstrained) and after", fontsize=11)
    return _save(fig, out_dir / "violations.png")


def multiplier_trajectories(records: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """Lagrange multipliers over training steps, for the first seed and largest label budget of
    every constrained (source, target, strategy, formulation). Needs `multipliers` in records:
    ``{constraint_name: [value per logged step]}``."""
    recs = [r for r in records if r.get("status") == "ok" and r.get("multipliers")]
    if not recs:
        return None
    seed0 = min(r["cell"]["seed"] for r in recs)
    recs = [r for r in recs if r["cell"]["seed"] == seed0]
    top = max(r["cell"]["labels"] for r in recs)
    recs = [r for r in recs if r["cell"]["labels"] == top]
    panels = list(dict.fromkeys((r["cell"]["constraint"], r["cell"]["formulation"]) for r in recs))
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False,
                             layout="constrained")
    for ax, (cset, form) in zip(axes.flat, panels, strict=False):
        for r in recs:
            c = r["cell"]
            if (c["constraint"], c["formulation"]) != (cset, form):
                continue
            steps = r.get("multiplier_steps")
            for name, values in r["multipliers"].items():
                x = steps if steps and len(steps) == len(values) else np.arange(len(values))
                ax.plot(x, values, label=f"{c['source']}->{c['target']} {c['strategy']}: {name}")
        ax.set_xlabel("training step")
        ax.set_ylabel("multiplier")
        ax.set_title(f"{cset} ({form}), {top} labels, seed {seed0}", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Multiplier trajectories", fontsize=11)
    return _save(fig, out_dir / "multipliers.png")


def all_plots(frame: pd.DataFrame, records: list[dict[str, Any]], headline: tuple[str, bool],
              out_dir: Path) -> dict[str, Path]:
    """Every plot the study has data for: {title: path}."""
    made = {
        "Learning curves": learning_curves(frame, headline, out_dir),
        "Transfer matrix": transfer_matrix(frame, headline, out_dir),
        "Reliability diagrams": reliability_diagrams(records, out_dir),
        "Constraint violations before and after": violations_before_after(records, out_dir),
        "Multiplier trajectories": multiplier_trajectories(records, out_dir),
    }
    return {k: v for k, v in made.items() if v is not None}
