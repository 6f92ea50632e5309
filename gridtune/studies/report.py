"""Study report: report.md and a self-contained report.html (plots embedded as base64), and the
short summary table printed at the end of a run.

The report reads only the study directory (`gridtune.studies.store.ResultsStore`). Both
documents are rendered from one list of blocks, so they always say the same thing.

Transfer verdicts come from `gridtune.core.verdict.transfer_verdict`, per group of cells that
differ only in their seed, paired by seed: the mean gain over scratch with its bootstrap
interval, and `positive transfer` / `negative transfer` only when the whole interval lies on one
side of zero. Otherwise, and with a single seed, the group is `inconclusive`: neither document
calls it negative.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridtune.core.verdict import MIN_TEST, transfer_verdict
from gridtune.files import atomic_write_text
from gridtune.studies import plots
from gridtune.studies.formatting import mean_sd, pm
from gridtune.studies.store import ResultsStore

GROUP = ["source", "target", "constraint", "formulation", "strategy", "labels"]
NEGATIVE, POSITIVE, INCONCLUSIVE = "negative transfer", "positive transfer", "inconclusive"
NO_BASELINE = "no scratch baseline"
ONE_SEED = "one seed: no confidence interval; run several seeds"

Block = tuple[Any, ...]


def group_verdict(rows: pd.DataFrame, metric: str, higher: bool) -> dict[str, Any]:
    """The transfer verdict of one group's cells (one per seed), paired by seed with the scratch
    baseline of the same seed: gain, interval, label, note."""
    scratch_col = f"scratch_{metric}"
    if scratch_col not in rows:
        pairs = rows.iloc[0:0]
    else:
        pairs = rows[["seed", metric, scratch_col]].apply(pd.to_numeric, errors="coerce").dropna()
    if pairs.empty:
        return {"gain": np.nan, "ci_low": np.nan, "ci_high": np.nan, "verdict": NO_BASELINE,
                "verdict_note": "no seed has both the metric and a scratch baseline"}
    pairs = pairs.sort_values("seed")
    n_test = pd.to_numeric(rows["n_test"], errors="coerce").dropna() if "n_test" in rows else None
    v = transfer_verdict(pairs[metric].to_list(), pairs[scratch_col].to_list(), metric=metric,
                         higher_is_better=higher, min_test=MIN_TEST,
                         n_test=int(n_test.min()) if n_test is not None and len(n_test) else None)
    note = ONE_SEED if v.n_seeds < 2 else v.note
    dropped = len(rows) - len(pairs)
    if dropped:
        note = (note + "; " if note else "") + f"{dropped} seed(s) without a defined `{metric}` left out"
    return {"gain": v.gain_mean, "ci_low": v.ci_low, "ci_high": v.ci_high, "verdict": v.label,
            "verdict_note": note}


def summary_table(frame: pd.DataFrame, headline: tuple[str, bool]) -> pd.DataFrame:
    """Per cell group (all keys but the seed): mean and std over seeds of the headline metric,
    scratch's mean, the transfer verdict (gain, bootstrap interval, label, note), the test-split
    size, the AC-OPF solver time of the labels and the wall time per cell."""
    metric, higher = headline
    columns = GROUP + ["seeds", metric, f"{metric}_std", "scratch", "gain", "ci_low", "ci_high",
                       "verdict", "verdict_note", "n_test", "label_solver_time_s", "wall_time_s"]
    ok = frame[frame["status"] == "ok"]
    if ok.empty or metric not in ok:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, sub in ok.groupby(GROUP, sort=False):
        values = pd.to_numeric(sub[metric], errors="coerce")
        scratch = pd.to_numeric(sub.get(f"scratch_{metric}", pd.Series(dtype=float)),
                                errors="coerce")
        rows.append({**dict(zip(GROUP, key, strict=True)), "seeds": int(sub["seed"].nunique()),
                     metric: values.mean(), f"{metric}_std": values.std(),
                     "scratch": scratch.mean() if len(scratch) else np.nan,
                     **group_verdict(sub, metric, higher),
                     "n_test": _n_test(sub.get("n_test")),
                     "label_solver_time_s": _mean(sub.get("label_solver_time_s")),
                     "wall_time_s": _mean(sub.get("wall_time_s"))})
    return pd.DataFrame(rows, columns=columns)


def _mean(col: pd.Series | None) -> float:
    if col is None:
        return np.nan
    values = pd.to_numeric(col, errors="coerce").dropna()
    return float(values.mean()) if len(values) else np.nan


def _n_test(col: pd.Series | None) -> str:
    """Test-split size of a group: one number, or the range over seeds."""
    if col is None:
        return "-"
    values = sorted({int(v) for v in pd.to_numeric(col, errors="coerce").dropna()})
    if not values:
        return "-"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def negative_transfer(summary: pd.DataFrame) -> pd.DataFrame:
    """Groups whose verdict is negative transfer: the whole bootstrap interval of the gain lies
    below zero (never a group whose mean gain is merely negative)."""
    return summary[summary["verdict"] == NEGATIVE]


def failed_cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "failed"][["cell_id", "error"]]


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def _gain_text(row: dict[str, Any]) -> str:
    """`+0.050 [+0.040, +0.060]`, or the gain alone when there is no interval."""
    gain = _fmt(row["gain"], signed=True)
    if isinstance(row["ci_low"], float) and np.isfinite(row["ci_low"]):
        return f"{gain} [{_fmt(row['ci_low'], signed=True)}, {_fmt(row['ci_high'], signed=True)}]"
    return gain


def _verdict_text(row: dict[str, Any]) -> str:
    """The verdict label, with `(one seed)` when there is no interval to judge by."""
    if row["verdict"] == INCONCLUSIVE and row["verdict_note"].startswith("one seed"):
        return f"{INCONCLUSIVE} (one seed)"
    return str(row["verdict"])


def _seconds(v: Any) -> str:
    if v is None or not np.isfinite(v):
        return ""
    return f"{v:.0f} s" if v >= 10 else f"{v:.1f} s"


def label_cost(summary: pd.DataFrame) -> dict[str, dict[int, float]]:
    """{target: {labels: mean AC-OPF solver seconds of the labels}} where the datasets recorded
    their solve times."""
    out: dict[str, dict[int, float]] = {}
    for (target, labels), sub in summary.groupby(["target", "labels"], sort=False):
        t = _mean(sub["label_solver_time_s"])
        if np.isfinite(t):
            out.setdefault(str(target), {})[int(labels)] = t
    return out


def summary_text(frame: pd.DataFrame, headline: tuple[str, bool]) -> str:
    """Compact terminal table: one row per (pair, constraint, strategy), one column per budget,
    each entry `metric (gain)`; then the verdict counts and the label cost."""
    metric = headline[0]
    summ = summary_table(frame, headline)
    lines = []
    n_ok = int((frame["status"] == "ok").sum())
    n_failed = int((frame["status"] == "failed").sum())
    lines.append(f"{n_ok} cells finished, {n_failed} failed; {metric} (gain over scratch), "
                 "mean over seeds")
    if summ.empty:
        return "\n".join(lines)
    budgets = sorted(summ["labels"].unique())
    rows = [["source -> target", "constraint", "strategy"] + [f"{b} labels" for b in budgets]]
    for key, sub in summ.groupby(["source", "target", "constraint", "formulation", "strategy"],
                                 sort=False):
        source, target, constraint, form, strategy = key
        cons = "-" if constraint == "none" else f"{constraint}/{form}"
        by = {r["labels"]: r for r in sub.to_dict("records")}
        cells = [f"{_fmt(by[b][metric])} ({_fmt(by[b]['gain'], signed=True)})" if b in by else ""
                 for b in budgets]
        rows.append([f"{source} -> {target}", cons, strategy] + cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(verdict_counts(summ))
    cost = label_cost(summ)
    if cost:
        lines.append("label cost (AC-OPF solver time): " + "; ".join(
            f"{t}: " + ", ".join(f"{n} labels = {_seconds(s)}" for n, s in sorted(by.items()))
            for t, by in cost.items()))
    return "\n".join(lines)


def verdict_counts(summ: pd.DataFrame) -> str:
    """One line: how many groups got each verdict (bootstrap interval over seeds)."""
    counts = summ["verdict"].value_counts()
    notes = summ["verdict_note"].fillna("")
    why = {"with one seed only": int(notes.str.startswith("one seed").sum()),
           "with too few seeds": int(notes.str.contains("too few for a verdict").sum()),
           "on too small a test split": int(notes.str.contains("too small for a verdict").sum())}
    parts = [f"{int(counts.get(label, 0))} {label}" for label in (POSITIVE, NEGATIVE)]
    inconclusive = int(counts.get(INCONCLUSIVE, 0))
    reasons = ", ".join(f"{n} {text}" for text, n in why.items() if n)
    parts.append(f"{inconclusive} {INCONCLUSIVE}" + (f" ({reasons})" if reasons else ""))
    if counts.get(NO_BASELINE, 0):
        parts.append(f"{int(counts[NO_BASELINE])} without a scratch baseline")
    return "transfer verdicts (95% bootstrap interval over seeds): " + ", ".join(parts)


# ---- documents ---------------------------------------------------------------------------------

def _display(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    records = summary.to_dict("records")
    return pd.DataFrame({
        "source": summary["source"], "target": summary["target"],
        "constraint": [("-" if c == "none" else f"{c} / {f}")
                       for c, f in zip(summary["constraint"], summary["formulation"], strict=False)],
        "strategy": summary["strategy"],
        "labels (AC-OPF time)": [f"{r['labels']} ({_seconds(r['label_solver_time_s'])})"
                                 if _seconds(r["label_solver_time_s"]) else str(r["labels"])
                                 for r in records],
        "seeds": summary["seeds"],
        metric: [f"{_fmt(m)} ± {_fmt(s)}" if np.isfinite(s) else _fmt(m)
                 for m, s in zip(summary[metric], summary[f"{metric}_std"].astype(float), strict=False)],
        "scratch": [_fmt(v) for v in summary["scratch"]],
        "gain [95% CI]": [_gain_text(r) for r in records],
        "verdict": [_verdict_text(r) for r in records],
        "n_test": summary["n_test"],
        "time (s)": [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["wall_time_s"]],
    })


def _pretrain_table(store: ResultsStore, metric: str) -> pd.DataFrame | None:
    """One row per source: pre-training status, test-split metric on the source, wall time."""
    rows = []
    for source, done in store.pretrain_records().items():
        test = done.get("test") or {}
        rows.append({"source": source,
                     "status": "ok" if done.get("ok") else f"failed: {done.get('error')}",
                     f"{metric} (source test split)": _fmt(test.get(metric)),
                     "time (s)": f"{done.get('wall_time_s') or 0:.0f}"})
    return pd.DataFrame(rows) if rows else None


def zero_shot_table(records: list[dict[str, Any]], metric: str) -> pd.DataFrame | None:
    """One row per (source, target): the source model's test `metric` on the target before any
    fine-tuning, mean ± std over seeds (each seed draws its own split), and the test size."""
    seen: dict[tuple[str, str], dict[int, tuple[float | None, Any]]] = {}
    for r in records:
        cell = r.get("cell") or {}
        if r.get("status") != "ok" or not r.get("zero_shot"):
            continue
        by_seed = seen.setdefault((cell["source"], cell["target"]), {})
        by_seed.setdefault(cell["seed"], (r["zero_shot"].get(metric), r.get("n_test")))
    rows = [{"source": s, "target": t,
             f"zero-shot {metric}": pm(mean_sd(v[0] for v in by_seed.values()), ".4f"), "seeds": len(by_seed), "n_test": min(int(v[1] or 0) for v in by_seed.values())}
            for (s, t), by_seed in seen.items()]
    return pd.DataFrame(rows) if rows else None


def _verdict_blocks(summ: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [("h2", "Transfer verdicts")]
    if summ.empty:
        return blocks + [("p", "No finished cells.")]
    blocks.append(("p", "Per group of cells that differ only in their seed: the gain over "
                        "scratch, paired by seed, with a 95% percentile bootstrap interval of its "
                        "mean. `negative transfer` / `positive transfer` only when the whole "
                        "interval lies below / above zero; `inconclusive` when it spans zero or "
                        "when there is only one seed (no interval). With fewer than 5 seeds the "
                        "interval is optimistic (too narrow). " + verdict_counts(summ) + "."))
    for label, title in ((NEGATIVE, "Negative transfer (interval below zero)"),
                         (POSITIVE, "Positive transfer (interval above zero)")):
        rows = summ[summ["verdict"] == label]
        if len(rows):
            blocks.append(("p", f"{title}:"))
            blocks.append(("ul", [_group_name(r) + f": gain {_gain_text(r)}, n_test {r['n_test']}"
                                  for r in rows.to_dict("records")]))
    if not (summ["verdict"] == NEGATIVE).any():
        blocks.append(("p", "No group shows negative transfer"
                            + ("" if summ["gain"].notna().any()
                               else " (no gain could be computed: no scratch baseline)") + "."))
    one = summ[summ["verdict_note"].str.startswith("one seed")]
    if len(one):
        blocks.append(("p", f"{len(one)} group(s) ran one seed only: their verdict is "
                            "inconclusive whatever the sign of the gain; run several seeds "
                            "(`--set 'seeds=[0, 1, 2, 3, 4]'`)."))
    return blocks


def _group_name(r: dict[str, Any]) -> str:
    return (f"{r['source']} -> {r['target']}, `{r['strategy']}`, {r['labels']} labels"
            + ("" if r["constraint"] == "none" else f", {r['constraint']} / {r['formulation']}"))


def learning_curves(frame: pd.DataFrame, summ: pd.DataFrame, metric: str
                    ) -> list[tuple[str, pd.DataFrame]]:
    """Per (source -> target, constraint): one row per strategy and one for scratch, one column
    per label budget headed with the AC-OPF solver time those labels cost ("100 labels
    (20 s AC-OPF)"); entries are mean ± std over seeds (number of seeds)."""
    ok = frame[frame["status"] == "ok"]
    if summ.empty or metric not in ok:
        return []
    cost = label_cost(summ)
    scratch_col = f"scratch_{metric}"
    out = []
    keys = ["source", "target", "constraint", "formulation"]
    for key, sub in ok.groupby(keys, sort=False):
        budgets = sorted(sub["labels"].unique())
        head = {b: f"{b} labels" + (f" ({_seconds(cost[key[1]][b])} AC-OPF)"
                                    if b in cost.get(str(key[1]), {}) else "") for b in budgets}
        rows = []
        if scratch_col in sub and sub[scratch_col].notna().any():
            row = {"strategy": "scratch"}
            for b in budgets:
                per_seed = sub[sub["labels"] == b].groupby("seed")[scratch_col].first()
                row[head[b]] = _curve_cell(per_seed)
            rows.append(row)
        for strategy, ss in sub.groupby("strategy", sort=False):
            rows.append({"strategy": strategy, **{head[b]: _curve_cell(ss[ss["labels"] == b][metric])
                                                   for b in budgets}})
        title = f"{key[0]} -> {key[1]}" + ("" if key[2] == "none" else f", {key[2]} / {key[3]}")
        out.append((title, pd.DataFrame(rows)))
    return out


def _curve_cell(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "-"
    if len(v) == 1:
        return f"{v.iloc[0]:.3f} (1)"
    return f"{v.mean():.3f} ± {v.std():.3f} ({len(v)})"


def label_efficiency(summ: pd.DataFrame, metric: str, higher: bool) -> pd.DataFrame | None:
    """Per strategy and budget: the largest label budget at which scratch's mean does no better
    than the strategy's mean ("100 labels of `full` are worth 1000 of scratch"). Needs at least
    two budgets."""
    if summ.empty or summ["labels"].nunique() < 2:
        return None
    rows = []
    keys = ["source", "target", "constraint", "formulation"]
    for key, sub in summ.groupby(keys, sort=False):
        scratch = sub.groupby("labels")["scratch"].mean().dropna()
        if scratch.empty:
            continue
        for strategy, ss in sub.groupby("strategy", sort=False):
            row = {"source -> target": f"{key[0]} -> {key[1]}",
                   "constraint": "-" if key[2] == "none" else f"{key[2]} / {key[3]}",
                   "strategy": strategy}
            for r in ss.sort_values("labels").to_dict("records"):
                value = r[metric]
                if not np.isfinite(value):
                    continue
                reached = [int(b) for b, s in scratch.items()
                           if (value >= s if higher else value <= s)]
                row[f"{r['labels']} labels"] = (f"{max(reached)}" if reached
                                                else f"< {int(scratch.index.min())}")
            rows.append(row)
    return pd.DataFrame(rows).fillna("-") if rows else None


def reach_table(frame: pd.DataFrame, summ: pd.DataFrame, records: list[dict[str, Any]],
                headline: tuple[str, bool], reach: float) -> pd.DataFrame | None:
    """Per (source -> target, constraint) and strategy, scratch and zero-shot included: the
    smallest label budget whose mean `metric` over seeds reaches `reach`, how many seeds reach it
    there, and the AC-OPF solver time those labels cost (training and early-stopping labels, mean
    over seeds), in hours. A strategy that reaches it at no budget shows its best mean instead."""
    metric, higher = headline
    ok = frame[frame["status"] == "ok"]
    if summ.empty or metric not in ok:
        return None
    cost = label_cost(summ)
    zero = _zero_shot_by_pair(records, metric)
    scratch_col = f"scratch_{metric}"

    def meets(v: float) -> bool:
        return bool(v >= reach) if higher else bool(v <= reach)

    rows: list[tuple[Any, ...]] = []
    for key, sub in ok.groupby(["source", "target", "constraint", "formulation"], sort=False):
        where = f"{key[0]} -> {key[1]}" + ("" if key[2] == "none" else f", {key[2]} / {key[3]}")
        target_cost = cost.get(str(key[1]), {})

        curves: list[tuple[str, dict[int, pd.Series]]] = []
        if scratch_col in sub and sub[scratch_col].notna().any():
            curves.append(("scratch", {int(b): g.groupby("seed")[scratch_col].first()
                                       for b, g in sub.groupby("labels")}))
        curves += [(str(st), {int(b): g[metric] for b, g in ss.groupby("labels")})
                   for st, ss in sub.groupby("strategy", sort=False)]
        shot = zero.get((str(key[0]), str(key[1])))
        if shot and key[2] == "none":
            seeds = pd.Series(shot, dtype=float)
            hit = meets(seeds.mean())
            rows.append((where, "zero-shot", 0 if hit else "not reached",
                         f"{int(seeds.map(meets).sum())} of {len(seeds)}", f"{seeds.mean():.4f}",
                         "0" if hit else "-"))
        for name, curve in curves:
            means = {b: pd.to_numeric(v, errors="coerce").dropna() for b, v in sorted(curve.items())}
            means = {b: v for b, v in means.items() if len(v)}
            if not means:
                continue
            budget = next((b for b, v in means.items() if meets(v.mean())), None)
            if budget is None:
                best = (max if higher else min)(means, key=lambda b: means[b].mean())
                rows.append((where, name, f"not reached (> {max(means)})", "-",
                             f"best {means[best].mean():.4f} at {best}",
                             _hours(target_cost, max(means), "> ")))
            else:
                v = means[budget]
                rows.append((where, name, budget, f"{int(v.map(meets).sum())} of {len(v)}",
                             f"{v.mean():.4f}", _hours(target_cost, budget)))
    columns = ["source -> target", "strategy", f"labels to reach {metric} {reach:g}",
               "seeds reaching", f"mean {metric} there", "AC-OPF hours"]
    return pd.DataFrame(rows, columns=columns) if rows else None


def _hours(cost: dict[int, float], budget: int, prefix: str = "") -> str:
    """The AC-OPF solver time of a label budget in hours, or `-` where it was not recorded."""
    return f"{prefix}{cost[budget] / 3600:.2f}" if budget in cost else "-"


def _zero_shot_by_pair(records: list[dict[str, Any]], metric: str
                       ) -> dict[tuple[str, str], dict[int, float]]:
    """{(source, target): {seed: zero-shot metric}} from the cells' records."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        cell = r.get("cell") or {}
        value = (r.get("zero_shot") or {}).get(metric) if r.get("status") == "ok" else None
        if value is not None and np.isfinite(value):
            out.setdefault((cell["source"], cell["target"]), {}).setdefault(cell["seed"], float(value))
    return out


def fewer_labels_table(frame: pd.DataFrame, headline: tuple[str, bool]) -> pd.DataFrame | None:
    """Each strategy at a label budget against scratch at every larger budget, paired by seed
    (a seed draws one split for every budget): the gain with its bootstrap interval and verdict
    (`transfer_verdict`: at least 3 seeds and a test split of `MIN_TEST`). A row is only
    `informative` where scratch itself is shown to gain from the larger budget (its own verdict
    at the smaller budget against the larger one is negative); otherwise a small-budget strategy
    "reaching" scratch there says nothing about labels saved."""
    metric, higher = headline
    scratch_col = f"scratch_{metric}"
    ok = frame[frame["status"] == "ok"]
    if ok.empty or scratch_col not in ok or ok["labels"].nunique() < 2:
        return None
    rows = []
    for key, sub in ok.groupby(["source", "target", "constraint", "formulation"], sort=False):
        carriers = sub.dropna(subset=[scratch_col])
        scratch = {int(b): dict(zip(g["seed"], pd.to_numeric(g[scratch_col]), strict=True))
                   for b, g in carriers.groupby("labels")}
        n_test = pd.to_numeric(sub.get("n_test"), errors="coerce").dropna()
        n = int(n_test.min()) if len(n_test) else None
        where = f"{key[0]} -> {key[1]}" + ("" if key[2] == "none" else f", {key[2]} / {key[3]}")
        for small in sorted(scratch):
            strategies = [("scratch", scratch[small])] + [
                (st, dict(zip(g["seed"], pd.to_numeric(g[metric]), strict=True)))
                for st, g in sub[sub["labels"] == small].groupby("strategy", sort=False)]
            for big in (b for b in sorted(scratch) if b > small):
                own = _paired(scratch[small], scratch[big], headline, n)
                informative = own is not None and own.negative_transfer
                for name, mine in strategies:
                    v = own if name == "scratch" else _paired(mine, scratch[big], headline, n)
                    if v is None:
                        continue
                    rows.append({"source -> target": where, "strategy": name,
                                 "labels": small, "scratch labels": big,
                                 f"{metric} - scratch's": f"{v.gain_mean:+.4f} [{v.ci_low:+.4f}, "
                                                         f"{v.ci_high:+.4f}]",
                                 "seeds": v.n_seeds, "verdict": _compared(v),
                                 "informative": "yes" if informative else "no"})
    return pd.DataFrame(rows) if rows else None


def sources_table(frame: pd.DataFrame, records: list[dict[str, Any]], headline: tuple[str, bool]
                  ) -> pd.DataFrame | None:
    """Where several sources share a target: each later source against each earlier one, per
    strategy and label budget and zero-shot, paired by seed (the seed draws the target's split
    and labels, whatever the source): the gain in the headline metric (positive: the later source
    better) with its bootstrap interval and verdict (`transfer_verdict`, at least 3 seeds and a
    test split of `MIN_TEST`). Which pre-training transfers better, told apart from seed-to-seed
    spread."""
    metric, _ = headline
    ok = frame[frame["status"] == "ok"]
    if ok.empty or ok["source"].nunique() < 2:
        return None
    values: dict[tuple, dict[str, dict[int, float]]] = {}  # (target, constraint, what) -> source -> seed
    n_tests: dict[tuple, list[int]] = {}
    for _, r in ok.iterrows():
        key = (r["target"], r["constraint"], r["formulation"], r["strategy"], int(r["labels"]))
        values.setdefault(key, {}).setdefault(r["source"], {})[int(r["seed"])] = float(r[metric])
        n_tests.setdefault(key, []).append(int(r["n_test"]))
    for rec in records:
        cell = rec.get("cell") or {}
        zs = (rec.get("zero_shot") or {}).get(metric) if rec.get("status") == "ok" else None
        if zs is None:
            continue
        key = (cell["target"], cell.get("constraint", "none"), cell.get("formulation", "none"), "zero-shot", 0)
        values.setdefault(key, {}).setdefault(cell["source"], {})[int(cell["seed"])] = float(zs)
        n_tests.setdefault(key, []).append(int(rec.get("n_test") or 0))
    rows = []
    for key in sorted(values, key=lambda k: (k[0], k[1], k[2], k[3] != "zero-shot", k[3], k[4])):
        target, constraint, formulation, strategy, labels = key
        by_source = values[key]
        names = list(by_source)
        for j, later in enumerate(names):
            for earlier in names[:j]:
                v = _paired(by_source[later], by_source[earlier], headline, min(n_tests[key]))
                if v is None:
                    continue
                rows.append({"target": target + ("" if constraint == "none" else f", {constraint} / {formulation}"),
                             "strategy": strategy, "labels": labels, "source": later, "against": earlier,
                             f"{metric} gain": f"{v.gain_mean:+.4f} [{v.ci_low:+.4f}, {v.ci_high:+.4f}]",
                             "seeds": v.n_seeds, "verdict": _compared(v)})
    return pd.DataFrame(rows) if rows else None


def _compared(v: Any) -> str:
    """A paired comparison's verdict in the words of a table that compares two models."""
    return {"positive transfer": "better", "negative transfer": "worse"}.get(v.label, "no difference shown")


def _paired(mine: dict[Any, float], theirs: dict[Any, float], headline: tuple[str, bool],
            n_test: int | None) -> Any:
    """`transfer_verdict` of `mine` against `theirs` over the seeds both have (None: none)."""
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    return transfer_verdict([mine[x] for x in seeds], [theirs[x] for x in seeds], metric=headline[0],
                            higher_is_better=headline[1], n_test=n_test, min_test=MIN_TEST)


def _ratio(base: float, value: float) -> str:
    if not (np.isfinite(base) and np.isfinite(value)):
        return "-"
    if value == 0:
        return "∞ (none left)" if base > 0 else "-"
    return f"{base / value:.3g}x"


def _viol(recs: list[dict[str, Any]], cset: str, name: str, key: str) -> tuple[float, float]:
    return mean_sd([r["violations_by_set"][cset].get(name, {}).get(key) for r in recs])


def _metric_mean(recs: list[dict[str, Any]], metric: str) -> float:
    return mean_sd([r["metrics"].get(metric) for r in recs])[0]


def fallback_table(records: list[dict[str, Any]], metric: str) -> pd.DataFrame | None:
    """Per source, target, strategy and label budget (cells with `[finetune] conformal_alpha`):
    the headline metric beside conformal coverage on the test split and the solver fallback
    (share of test scenarios the model answers, error among them), mean ± std over seeds."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("trust")]
    if not ok:
        return None
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in ok:
        c = r["cell"]
        key = (c["source"], c["target"], c.get("constraint") or "none", c.get("formulation") or "none",
               c["strategy"], c["labels"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (source, target, constraint, formulation, strategy, labels), recs in groups.items():
        t = [r["trust"] for r in recs]
        rows.append({
            "source": source, "target": target, "constraint": constraint, "formulation": formulation,
            "strategy": strategy,
            "labels": labels, "seeds": len(recs),
            metric: pm(mean_sd([r["metrics"].get(metric) for r in recs]), ".4f"),
            "alpha": _fmt(t[0].get("alpha")),
            "calibration": int(np.mean([x.get("n_calibration") or 0 for x in t])),
            "coverage": pm(mean_sd([x.get("coverage") for x in t]), ".3f"),
            "answered": pm(mean_sd([x.get("answered_share") for x in t]), ".1f", 100.0) + " %",
            "error among answered": pm(mean_sd([x.get("error_among_answered") for x in t]), ".2f", 100.0) + " %",
        })
    return pd.DataFrame(rows)


def constraint_tables(records: list[dict[str, Any]], headline: tuple[str, bool]
                      ) -> list[tuple[str, pd.DataFrame]]:
    """Per constraint set of the study: unconstrained fine-tuning against each formulation that
    trained on it (and cells trained on other sets), on the set's test-split violations.

    Per row, mean ± std over seeds: share of violating checks (%), mean violation, the cut
    against unconstrained (its mean violation over this row's), the headline metric and its
    change against unconstrained (for an error headline, the relative change of every metric),
    training seconds per epoch. Cuts and changes compare the seeds both rows have. Reads
    `violations_by_set`, which every cell records."""
    metric, higher = headline
    ok = [r for r in records if r.get("status") == "ok" and r.get("violations_by_set")]
    sets = list(dict.fromkeys(s for r in ok for s in r["violations_by_set"]))
    out = []
    for cset in sets:
        rows = []
        keys = list(dict.fromkeys((r["cell"]["source"], r["cell"]["target"], r["cell"]["strategy"],
                                   r["cell"]["labels"]) for r in ok))
        for key in keys:
            mine = [r for r in ok if (r["cell"]["source"], r["cell"]["target"],
                                      r["cell"]["strategy"], r["cell"]["labels"]) == key
                    and cset in r["violations_by_set"]]
            variants: dict[str, list[dict[str, Any]]] = {}
            for r in mine:
                c = r["cell"]
                name = ("unconstrained" if c["constraint"] == "none" else c["formulation"]
                        if c["constraint"] == cset else f"{c['constraint']} / {c['formulation']}")
                variants.setdefault(name, []).append(r)
            unconstrained = {r["cell"]["seed"]: r for r in variants.get("unconstrained", [])}
            names = list(dict.fromkeys(n for r in mine for n in r["violations_by_set"][cset]))
            for variant, rs in variants.items():
                # ratios and changes against unconstrained fine-tuning on the same seeds
                paired = [r for r in rs if r["cell"]["seed"] in unconstrained]
                base = [unconstrained[r["cell"]["seed"]] for r in paired]
                row: dict[str, Any] = {"source -> target": f"{key[0]} -> {key[1]}",
                                       "strategy": key[2], "labels": key[3], "variant": variant,
                                       "seeds": len(rs)}
                for n in names:
                    row[f"{n}: violating (%)"] = pm(_viol(rs, cset, n, "violation_rate"), ".2f", 100)
                    row[f"{n}: mean violation"] = pm(_viol(rs, cset, n, "mean_violation"))
                    row[f"{n}: cut"] = ("1x" if variant == "unconstrained" else
                                        _ratio(_viol(base, cset, n, "mean_violation")[0],
                                               _viol(paired, cset, n, "mean_violation")[0]))
                row[metric] = pm(mean_sd([r["metrics"].get(metric) for r in rs]), ".4f")
                change = ""
                if variant != "unconstrained" and paired:
                    if higher:
                        change = _fmt(_metric_mean(paired, metric) - _metric_mean(base, metric),
                                      signed=True)
                    else:
                        change = ", ".join(
                            f"{m} {(_metric_mean(paired, m) / b - 1) * 100:+.1f}%"
                            for m in rs[0]["metrics"]
                            if (b := _metric_mean(base, m)) and np.isfinite(b))
                row[f"Δ {metric}" if higher else "Δ metrics"] = change
                per_epoch = mean_sd([(r.get("train_wall_time_s") or math.nan)
                                    / max(r.get("epochs_run") or 1, 1) for r in rs])
                row["s / epoch"] = _fmt(per_epoch[0]) if np.isfinite(per_epoch[0]) else "-"
                rows.append(row)
        if rows:
            out.append((cset, pd.DataFrame(rows).fillna("")))
    return out


def build_blocks(study: dict[str, Any], frame: pd.DataFrame, records: list[dict[str, Any]],
                 datasets: dict[str, Any], plot_paths: dict[str, Path], store: ResultsStore
                 ) -> list[Block]:
    spec = study.get("spec", {})
    metric, higher = study["headline"]
    summ = summary_table(frame, (metric, higher))
    blocks: list[Block] = [("h1", f"Study `{spec.get('name', store.root.name)}`")]
    blocks.append(("p", f"Task `{spec.get('task')}`; headline metric `{metric}` "
                        f"({'higher' if higher else 'lower'} is better). Transfer gain = "
                        f"fine-tuned minus scratch at the same target, labels and seed "
                        f"(positive: transfer helped). Generated "
                        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}."))
    report_sets = spec.get("constraints", []) + spec.get("report_constraints", [])
    fed_ids = list(study.get("federated_cells") or {})
    if fed_ids and not spec.get("sources"):  # federated cells only
        return blocks + _federated_blocks(fed_ids, store)
    sets = spec.get("source_sets") or {}
    blocks.append(("ul", [
        "sources: " + ", ".join(f"{s} (one model across {' + '.join(sets[s])})" if s in sets else s
                                for s in spec.get("sources", [])),
        f"targets: {', '.join(spec.get('targets', []))}",
        f"strategies: {', '.join(spec.get('strategies', []))}",
        f"label budgets: {', '.join(str(x) for x in spec.get('labels', []))}; seeds: "
        f"{', '.join(str(x) for x in spec.get('seeds', []))}",
        f"constraints: {', '.join(spec.get('constraints', [])) or 'none'}"
        + (f"; formulations: {', '.join(spec.get('formulations', []))}"
           if spec.get("constraints") else "")
        + (f"; violations reported for: {', '.join(report_sets)}" if report_sets else ""),
        f"cells: {len(frame)} ({int((frame['status'] == 'ok').sum())} finished, "
        f"{int((frame['status'] == 'failed').sum())} failed)",
    ]))
    if datasets:
        rows = []
        for name, d in datasets.items():
            counts = d.get("counts") or {}
            rows.append({"grid": name, "scenarios": d.get("samples"),
                         "feasible": counts.get("feasible"), "infeasible": counts.get("infeasible"),
                         "unknown": counts.get("unknown"),
                         "content hash": f"`{d.get('content_hash')}`"})
        blocks += [("h2", "Datasets"), ("table", pd.DataFrame(rows))]
    pre = _pretrain_table(store, metric)
    if pre is not None:
        blocks += [("h2", "Pre-training (once per source)"), ("table", pre)]
    zero = zero_shot_table(records, metric)
    if zero is not None:
        blocks += [("h2", "Zero-shot on the targets"),
                   ("p", f"Each source model's test `{metric}` on the target before any target "
                         "label (the cells' own test splits; `n_test`: the smallest)."),
                   ("table", zero)]
    blocks += [("h2", "Results"),
               ("p", "Mean ± std over seeds; `n_test`: target test-split graphs per cell; "
                     "labels with the AC-OPF solver time they cost (mean over seeds)."),
               ("table", _display(summ, metric))]
    curves = learning_curves(frame, summ, metric)
    if curves and summ["labels"].nunique() > 1:
        blocks += [("h2", "Learning curves"),
                   ("p", f"Test `{metric}`, mean ± std over seeds (number of seeds), per label "
                         "budget; each budget is headed with the AC-OPF solver time its labels "
                         "cost (mean over seeds), where the dataset recorded it.")]
        for title, table in curves:
            blocks += [("p", f"{title}:"), ("table", table)]
    blocks += _verdict_blocks(summ)
    eff = label_efficiency(summ, metric, higher)
    if eff is not None:
        blocks += [("h2", "Label efficiency"),
                   ("p", "The largest label budget at which training from scratch does no better "
                         f"(mean `{metric}`) than each strategy at its own budget; `< N`: below "
                         "scratch at every budget."),
                   ("table", eff)]
    compared = sources_table(frame, records, (metric, higher))
    if compared is not None:
        blocks += [("h2", "Sources compared"),
                   ("p", f"Where several sources share a target: the gain in `{metric}` of `source` over "
                         "`against` (positive: `source` better) for the same strategy, labels and seed "
                         "(one split and label draw per seed), with a 95% bootstrap interval; "
                         "`zero-shot` before any target label. "
                         "`better` / `worse` only when the interval excludes zero (at least 3 seeds "
                         f"and a test split of at least {MIN_TEST})."),
                   ("table", compared)]
    for reach in spec.get("reach") or ():
        reached = reach_table(frame, summ, records, (metric, higher), reach)
        if reached is None:
            continue
        blocks += [("h2", f"Labels and solver time to reach {metric} {reach:g}"),
                   ("p", f"The smallest label budget whose mean `{metric}` over seeds reaches "
                         f"{reach:g}, the seeds that reach it there, and the AC-OPF solver time "
                         "its labels cost (training and early-stopping labels, as the dataset "
                         "recorded them; mean over seeds). Budgets between those run are not "
                         "measured: the true need lies between the budget before and this one."),
                   ("table", reached)]
    fewer = fewer_labels_table(frame, (metric, higher))
    if fewer is not None:
        blocks += [("h2", "Fewer labels than scratch"),
                   ("p", f"Each strategy with `labels` target labels against scratch with more "
                         f"(`scratch labels`), paired by seed: the gain in `{metric}` with a 95% "
                         "bootstrap interval. `better` / `worse` only when the interval excludes "
                         "zero (at least 3 seeds and a test split of at least "
                         f"{MIN_TEST}). `informative`: scratch itself is worse at `labels` than "
                         "at `scratch labels` (its own row); where it is not, matching scratch "
                         "there says nothing about labels saved. Rows `scratch`: scratch at "
                         "`labels` against itself at `scratch labels`."),
                   ("table", fewer)]
    fb = fallback_table(records, metric)
    if fb is not None:
        blocks += [("h2", "Conformal coverage and solver fallback (test split)"),
                   ("p", "Each fine-tuned model's conformal sets calibrated on the target's "
                         "validation split (`calibration`: its labelled scenarios, a solver cost "
                         "beyond `labels`); the model answers where its set is one class and the "
                         "scenario is familiar, the rest go to the AC-OPF. Mean ± std over seeds; "
                         "coverage should be at least 1 - alpha."),
                   ("table", fb)]
    if fed_ids:
        return blocks + _federated_blocks(fed_ids, store, failed_cells(frame))
    blocks += _failed_blocks(failed_cells(frame))
    tables = constraint_tables(records, (metric, higher))
    if tables:
        for cset, table in tables:
            blocks += [("h2", f"Constraint `{cset}` (test split)"),
                       ("p", "Mean ± std over seeds; cut: unconstrained mean violation over the "
                             "row's; changes against unconstrained fine-tuning."),
                       ("table", table)]
    elif "violation_rate" in frame and frame["violation_rate"].notna().any():
        viol = frame[(frame["status"] == "ok") & frame["violation_rate"].notna()]
        table = viol.groupby(["target", "constraint", "formulation", "strategy"], sort=False).agg(
            violation_rate=("violation_rate", "mean"), max_violation=("max_violation", "max"),
        ).reset_index()
        blocks += [("h2", "Constraint violations (worst constraint of each set, test split)"),
                   ("table", table.assign(violation_rate=table["violation_rate"].map(_fmt),
                                          max_violation=table["max_violation"].map(_fmt)))]
    if plot_paths:
        blocks.append(("h2", "Plots"))
        for title, path in plot_paths.items():
            blocks.append(("img", title, path))
    return blocks


def _failed_blocks(failed: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [("h2", "Failed cells")]
    if len(failed):
        blocks.append(("p", f"{len(failed)} cell(s) failed; rerun the study to retry them. "
                            "Details in `results/<cell_id>.json` (`federated/<cell_id>.json`)."))
        blocks.append(("ul", [f"`{r['cell_id']}`: {str(r['error']).splitlines()[0] if r['error'] else '?'}"
                              for r in failed.to_dict("records")]))
    else:
        blocks.append(("p", "None."))
    return blocks


def _federated_blocks(fed_ids: list[str], store: ResultsStore, failed: pd.DataFrame | None = None
                      ) -> list[Block]:
    """The federated cells' tables (`gridtune.studies.federated_cells`), then every failed cell."""
    from gridtune.studies.federated_cells import federated_tables

    records = store.federated_records(fed_ids)
    blocks: list[Block] = [
        ("h2", "Federated cells"),
        ("p", f"{sum(r.get('status') == 'ok' for r in records)} of {len(fed_ids)} finished. `global`: "
              "the federated model as released; `local`: trained on the site's data alone; the others "
              "personalise the global model on each site. Details per cell in "
              "`cells/<cell_id>/report.md`.")]
    for name, table, note in federated_tables(records):
        blocks += [("p", f"`{name}`: {note}"), ("table", table)]
    rows = [{"cell_id": r["cell_id"], "error": r.get("error")} for r in records if r.get("status") == "failed"]
    failed = failed if failed is not None else pd.DataFrame(columns=["cell_id", "error"])
    return blocks + _failed_blocks(pd.concat([failed, pd.DataFrame(rows)]) if rows else failed)


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def render_markdown(blocks: list[Block], root: Path) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}")
        elif kind == "h2":
            out.append(f"## {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "table":
            out.append(_md_table(b[1]))
        elif kind == "img":
            out.append(f"### {b[1]}\n\n![{b[1]}]({b[2].relative_to(root).as_posix()})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block]) -> str:
    title = next((b[1] for b in blocks if b[0] == "h1"), "gridtune study")
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            df = b[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(_fmt(v))}</td>" for v in r) + "</tr>"
                           for r in df.itertuples(index=False))
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(b[2]).read_bytes()).decode()
            body.append(f"<h3>{html.escape(b[1])}</h3><img alt=\"{html.escape(b[1])}\" "
                        f"src=\"data:image/png;base64,{data}\">")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
             "code{background:#f3f3f3;padding:0 3px}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_inline(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(root: str | Path) -> tuple[Path, Path]:
    """(Re)generate results.csv (from the cell records), the plots, report.md and report.html.

    Reads the study directory only (`ResultsStore`): the records in `results/` when present,
    otherwise results.csv alone (then only the plots and tables that need no per-cell detail).
    """
    store = ResultsStore(root)
    study = store.read_study()
    headline = (study["headline"][0], bool(study["headline"][1]))
    records = store.records(study.get("cells"))
    if records:
        store.write_csv(headline, study.get("cells"))
    frame = store.read_csv()
    plot_paths = plots.all_plots(frame, records, headline, store.root / "plots")
    blocks = build_blocks(study, frame, records, store.read_datasets(), plot_paths, store)
    md, page = store.root / "report.md", store.root / "report.html"
    atomic_write_text(md, render_markdown(blocks, store.root))
    atomic_write_text(page, render_html(blocks))
    return md, page
