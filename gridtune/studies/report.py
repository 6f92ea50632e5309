"""Study report: report.md and a self-contained report.html (plots embedded as base64), and the
short summary table printed at the end of a run.

Both documents are rendered from one list of blocks, so they always say the same thing. The
report names every negative transfer (mean gain over seeds below zero) and every failed cell.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridtune.errors import DataError
from gridtune.studies import plots
from gridtune.studies.store import ResultsStore, atomic_write_text

GROUP = ["source", "target", "constraint", "formulation", "strategy", "labels"]

Block = tuple[Any, ...]


def summary_table(frame: pd.DataFrame, headline: tuple[str, bool]) -> pd.DataFrame:
    """Mean and std over seeds of the headline metric, scratch and gain, per cell group."""
    metric = headline[0]
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=GROUP + ["seeds", metric, f"{metric}_std", "scratch",
                                             "gain", "gain_std", "wall_time_s"])
    scratch_col = f"scratch_{metric}"
    agg = ok.groupby(GROUP, sort=False).agg(
        seeds=("seed", "nunique"),
        value=(metric, "mean"), value_std=(metric, "std"),
        scratch=(scratch_col, "mean") if scratch_col in ok else ("seed", lambda s: np.nan),
        gain=("transfer_gain", "mean"), gain_std=("transfer_gain", "std"),
        wall_time_s=("wall_time_s", "mean"),
    ).reset_index()
    return agg.rename(columns={"value": metric, "value_std": f"{metric}_std"})


def negative_transfer(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows of the summary whose mean transfer gain is below zero."""
    gain = pd.to_numeric(summary["gain"], errors="coerce")
    return summary[gain < 0]


def failed_cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "failed"][["cell_id", "error"]]


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def summary_text(frame: pd.DataFrame, headline: tuple[str, bool]) -> str:
    """Compact terminal table: one row per (pair, constraint, strategy), one column per budget,
    each entry `metric (gain)`."""
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
    neg = negative_transfer(summ)
    if len(neg):
        lines.append(f"negative transfer in {len(neg)} group(s): see the report")
    return "\n".join(lines)


# ---- documents ---------------------------------------------------------------------------------

def _display(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    out = pd.DataFrame({
        "source": summary["source"], "target": summary["target"],
        "constraint": [("-" if c == "none" else f"{c} / {f}")
                       for c, f in zip(summary["constraint"], summary["formulation"], strict=False)],
        "strategy": summary["strategy"], "labels": summary["labels"], "seeds": summary["seeds"],
        metric: [f"{_fmt(m)} ± {_fmt(s)}" if np.isfinite(s) else _fmt(m)
                 for m, s in zip(summary[metric], summary[f"{metric}_std"].astype(float), strict=False)],
        "scratch": [_fmt(v) for v in summary["scratch"]],
        "gain": [_fmt(v, signed=True) for v in summary["gain"]],
        "time (s)": [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["wall_time_s"]],
    })
    return out


def _pretrain_table(root: Path, metric: str) -> pd.DataFrame | None:
    """One row per source: pre-training status, test-split metric on the source, wall time."""
    rows = []
    for path in sorted((root / "pretrain").glob("*/pretrain.json")):
        done = json.loads(path.read_text())
        test = done.get("test") or {}
        rows.append({"source": path.parent.name,
                     "status": "ok" if done.get("ok") else f"failed: {done.get('error')}",
                     f"{metric} (source test split)": _fmt(test.get(metric)),
                     "time (s)": f"{done.get('wall_time_s') or 0:.0f}"})
    return pd.DataFrame(rows) if rows else None


def build_blocks(study: dict[str, Any], frame: pd.DataFrame, datasets: dict[str, Any],
                 plot_paths: dict[str, Path], root: Path) -> list[Block]:
    spec = study.get("spec", {})
    metric, higher = study["headline"]
    summ = summary_table(frame, (metric, higher))
    blocks: list[Block] = [("h1", f"Study `{spec.get('name', root.name)}`")]
    blocks.append(("p", f"Task `{spec.get('task')}`; headline metric `{metric}` "
                        f"({'higher' if higher else 'lower'} is better). Transfer gain = "
                        f"fine-tuned minus scratch at the same target, labels and seed "
                        f"(positive: transfer helped). Generated "
                        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}."))
    blocks.append(("ul", [
        f"sources: {', '.join(spec.get('sources', []))}",
        f"targets: {', '.join(spec.get('targets', []))}",
        f"strategies: {', '.join(spec.get('strategies', []))}",
        f"label budgets: {', '.join(str(x) for x in spec.get('labels', []))}; seeds: "
        f"{', '.join(str(x) for x in spec.get('seeds', []))}",
        f"constraints: {', '.join(spec.get('constraints', [])) or 'none'}"
        + (f"; formulations: {', '.join(spec.get('formulations', []))}"
           if spec.get("constraints") else ""),
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
    pre = _pretrain_table(root, metric)
    if pre is not None:
        blocks += [("h2", "Pre-training (once per source)"), ("table", pre)]
    blocks += [("h2", "Results"), ("table", _display(summ, metric))]
    neg = negative_transfer(summ)
    blocks.append(("h2", "Negative transfer"))
    if len(neg):
        blocks.append(("p", "Fine-tuning did worse than training from scratch (mean gain over "
                            "seeds below zero) in these groups:"))
        blocks.append(("ul", [f"{r['source']} -> {r['target']}, `{r['strategy']}`, "
                              f"{r['labels']} labels"
                              + ("" if r["constraint"] == "none"
                                 else f", {r['constraint']} / {r['formulation']}")
                              + f": gain {_fmt(r['gain'], signed=True)}"
                              for r in neg.to_dict("records")]))
    else:
        blocks.append(("p", "None: no group has a negative mean gain"
                            + ("" if summ["gain"].notna().any()
                               else " (no gain could be computed: no scratch baseline)") + "."))
    failed = failed_cells(frame)
    blocks.append(("h2", "Failed cells"))
    if len(failed):
        blocks.append(("p", f"{len(failed)} cell(s) failed; rerun the study to retry them. "
                            "Details in `results/<cell_id>.json`."))
        blocks.append(("ul", [f"`{r['cell_id']}`: {str(r['error']).splitlines()[0] if r['error'] else '?'}"
                              for r in failed.to_dict("records")]))
    else:
        blocks.append(("p", "None."))
    if "violation_rate" in frame and frame["violation_rate"].notna().any():
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

    Works from the records in `results/` when present, otherwise from results.csv alone (then
    only the plots that need no per-cell detail are drawn).
    """
    root = Path(root)
    study_path = root / "study.json"
    if not study_path.is_file():
        raise DataError(f"`{root}` is not a study directory (no study.json); run "
                        f"`gridtune study SPEC --out {root}` first")
    study = json.loads(study_path.read_text())
    headline = (study["headline"][0], bool(study["headline"][1]))
    store = ResultsStore(root)
    records = store.records(study.get("cells"))
    if records:
        store.write_csv(headline, study.get("cells"))
    frame = store.read_csv()
    datasets_path = root / "datasets.json"
    datasets = json.loads(datasets_path.read_text()) if datasets_path.is_file() else {}
    plot_paths = plots.all_plots(frame, records, headline, root / "plots")
    blocks = build_blocks(study, frame, datasets, plot_paths, root)
    md, page = root / "report.md", root / "report.html"
    atomic_write_text(md, render_markdown(blocks, root))
    atomic_write_text(page, render_html(blocks))
    return md, page
