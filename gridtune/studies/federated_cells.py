"""Federated cells of a study: each `[[federated]]` entry run once per seed, resumably, and the
report's table of them.

A federated cell runs `gridtune.federated.run.run_federated` for one seed into
`<study>/cells/<cell_id>/` (its config.json, results.json, report.md and plots, sealed), and
its record goes to `<study>/federated/<cell_id>.json`: per site the test split's size and the
test metrics of the global model, each personalisation and local-only training, and the
privacy figures (epsilon spent at delta). A cell is run again only when it has no `ok` record
with the current fingerprint: the plan's, bound to the content hashes of its sites' data.
Federated cells run one after another in the study's process (a Flower simulation uses every
core it is given).
"""

from __future__ import annotations

import datetime as dt
import math
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from gridtune.studies.formatting import mean_sd, pm
from gridtune.studies.plan import FederatedPlan, bind
from gridtune.studies.store import ResultsStore

Log = Callable[[str], None]


def site_hashes(plan: FederatedPlan, *, workers: int | None) -> list[str]:
    """Build (or reuse) the cell's site data; the content hash of each site's scenarios, and the
    digest of the `init` checkpoint's weights when the spec starts from one."""
    from gridtune.federated.sites import resolve_sites
    from gridtune.grids.dataset import open_dataset
    from gridtune.nn.checkpoint import weights_digest

    dirs = resolve_sites(plan.spec.sites, samples=plan.spec.samples, workers=workers)
    hashes = [str(open_dataset(d, samples=plan.spec.samples, progress=False).content_hash) for d in dirs]
    return hashes + ([f"init:{weights_digest(plan.spec.init)}"] if plan.spec.init is not None else [])


def run_federated_cells(plans: tuple[FederatedPlan, ...], store: ResultsStore, *,
                        workers: int | None, log: Log) -> tuple[int, int, int]:
    """Run every federated cell not already finished; returns (ran, skipped, failed)."""
    ran = skipped = failed = 0
    for n, plan in enumerate(plans, start=1):
        start = time.perf_counter()
        record: dict[str, Any] = {"cell_id": plan.cell_id, "kind": "federated",
                                  "cell": {"name": plan.name, "seed": plan.seed}}
        try:
            fingerprint = bind(plan.fingerprint, *site_hashes(plan, workers=workers))
            record["fingerprint"] = fingerprint
            damaged = store.damage(store.federated_path(plan.cell_id))
            if damaged is not None:
                log(f"cell {plan.cell_id}: record `{damaged.path}` {damaged.problem}; running the cell again")
            if store.federated_finished(plan.cell_id, fingerprint):
                skipped += 1
                continue
            record.update(_run(plan, store, workers))
            record["status"] = "ok"
        except Exception as exc:  # one failing cell must not stop the study
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc())
            record.setdefault("fingerprint", plan.fingerprint)
        ran += 1
        failed += record["status"] == "failed"
        record["wall_time_s"] = time.perf_counter() - start
        record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        store.save_federated(record)
        detail = (f"mean test auroc global {record['mean_auroc'].get('global', math.nan):.4f}"
                  if record["status"] == "ok" else record["error"].splitlines()[0])
        log(f"[federated {n}/{len(plans)}] {plan.cell_id}: {record['status']} ({detail}, "
            f"{record['wall_time_s']:.0f} s)")
    if skipped:
        log(f"resume: {skipped} finished federated cell(s) skipped")
    return ran, skipped, failed


def _run(plan: FederatedPlan, store: ResultsStore, workers: int | None) -> dict[str, Any]:
    from gridtune.federated.run import run_federated
    from gridtune.files import seal

    out = store.cell_dir(plan.cell_id)
    result = run_federated(plan.spec, out, workers=workers)
    seal(out, ["config.json", "results.json"])
    run = result["runs"][0]
    return {"sites": list(result["sites"]), "n_test": run["n_test"], "metrics": run["sites"],
            "privacy": run["privacy"], "epsilon": run["privacy"].get("epsilon"),
            "mean_auroc": result["summary"]["mean_auroc"], "rounds": len(run["rounds"]),
            "failed_sites": sorted({f for r in run["rounds"] for f in r["failed"]}),
            "global_weights_sha": run["global_weights_sha"]}


def federated_tables(records: list[dict[str, Any]]) -> list[tuple[str, pd.DataFrame, str]]:
    """Per federated entry: (name, table of test AUROC per site and method, mean ± std over seeds
    with the test-split size, then the mean over sites; a note with the seeds and epsilon)."""
    out = []
    names = list(dict.fromkeys(r["cell"]["name"] for r in records if r.get("status") == "ok"))
    for name in names:
        recs = [r for r in records if r.get("status") == "ok" and r["cell"]["name"] == name]
        sites = recs[0]["sites"]
        methods = list(recs[0]["metrics"][sites[0]])
        rows = []
        for site in sites:
            row: dict[str, Any] = {"site": site, "n_test": recs[0]["n_test"].get(site)}
            for m in methods:
                row[m] = pm(mean_sd([r["metrics"][site][m].get("auroc") for r in recs]), ".4f")
            rows.append(row)
        mean_row: dict[str, Any] = {"site": "mean", "n_test": ""}
        for m in methods:
            mean_row[m] = pm(mean_sd([r["mean_auroc"].get(m) for r in recs]), ".4f")
        rows.append(mean_row)
        eps = [r.get("epsilon") for r in recs if r.get("epsilon") is not None]
        note = (f"Test AUROC, mean ± std over seeds {', '.join(str(r['cell']['seed']) for r in recs)}"
                + (f"; epsilon spent (max) {max(eps):.3g} at delta {recs[0]['privacy'].get('delta'):g}"
                   if eps else "; no differential privacy") + ".")
        out.append((name, pd.DataFrame(rows), note))
    return out


def federated_summary(records: list[dict[str, Any]]) -> str:
    """Terminal lines: per federated entry, the mean test AUROC over sites and seeds per method."""
    lines = []
    for name in dict.fromkeys(r["cell"]["name"] for r in records):
        recs = [r for r in records if r["cell"]["name"] == name]
        ok = [r for r in recs if r.get("status") == "ok"]
        if not ok:
            lines.append(f"federated `{name}`: {len(recs)} cell(s), none finished")
            continue
        methods = list(ok[0]["mean_auroc"])
        means = ", ".join(f"{m} {np.mean([r['mean_auroc'][m] for r in ok]):.4f}" for m in methods)
        lines.append(f"federated `{name}` ({len(ok)} of {len(recs)} seeds): mean test AUROC {means}")
    return "\n".join(lines)
