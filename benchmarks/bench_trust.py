"""Trust benchmark: conformal coverage, the solver fallback and the unfamiliar-grid score.

Targets (feasibility, shipped case118 recipe, >= 1000 test scenarios, 5 calibration/test splits):
- empirical marginal coverage within 1 percentage point of 1 - alpha at alpha = 0.05 and 0.01;
- at alpha = 0.01 the fallback (model answers only single-class sets on familiar scenarios)
  answers >= 80% of scenarios with an error rate <= 1% among them;
- the familiarity score detects scenarios of the changed grid with AUROC >= 0.9;
- calibration and prediction of 10,000 scenarios under a minute on one core once graphs exist.

Protocol: one checkpoint trained on the training split of `--data` (`--split`, seeded; trained
here unless `--checkpoint` exists). The model's outputs (P(infeasible) and graph embedding) are
computed once per scenario; the validation and test splits (never trained on) are pooled and cut
`--splits` times at random into a calibration part (the size of the validation split) and a test
part, and every figure is computed per cut (mean and std printed). The familiarity reference is
the training split's embeddings (distance to the nearest); its threshold is calibrated on each
cut's calibration part at `--false-alarm`; the batch test (`Familiarity.shift_pvalue`) is scored on
random batches of 10 and 50 scenarios of either grid. The changed grid (`--changed`) is scored against the in-distribution test parts
(AUROC), and its coverage is shown with the original calibration and after re-calibrating on
`--recalibrate` labels of the changed grid (the rest of it as test).

Timing: a fresh process loads the graphs (not timed), then runs `gridtune.workflows.trust`
`calibrate` on `--data` and `predict` on 10,000 distinct scenarios (the data, then the changed
grid, cycled only if fewer exist) with every DC-loadability LP solved afresh, on one thread.

    gridtune data build case118 --samples 5000 --workers 2
    gridtune data build case118_changed --workers 2
    python benchmarks/bench_trust.py --data case118 --samples 5000 --changed case118_changed \
        --opf --out runs/bench-trust
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALPHAS = (0.05, 0.01)


def outputs(model: Any, graphs: list[Any], cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P(infeasible) and embeddings; kept in `cache` (.npz) so a re-run skips the forward pass."""
    from gridtune.workflows.trust import model_outputs

    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if z["p"].shape[0] == len(graphs):
                return z["p"], z["emb"]
    p, emb = model_outputs(model, graphs)
    if cache is not None:
        np.savez(cache, p=p, emb=emb)
    return p, emb


def meta_digest(ck: Path) -> str:
    from gridtune.workflows.trust import _weights_digest

    return _weights_digest(ck)


def train(args: argparse.Namespace, ck: Path) -> None:
    import gridtune
    from gridtune.grids.split import parse_split

    t = time.perf_counter()
    r = gridtune.pretrain(args.data, ck, task="feasibility", samples=args.samples,
                          split=parse_split(args.split),
                          train=gridtune.TrainConfig(epochs=args.epochs, patience=args.patience,
                                                     lr_schedule="cosine", seed=args.seed))
    print(f"trained {ck}: test AUROC {r.test['model'].get('auroc'):.4f} "
          f"({r.epochs_run} epochs, {time.perf_counter() - t:.0f} s)", flush=True)


def stats(values: list[float]) -> str:
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    return f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}"


def one_cut(p: np.ndarray, emb: np.ndarray, y: np.ndarray, times: np.ndarray | None, cal: np.ndarray,
            test: np.ndarray, fam_ref: Any, false_alarm: float) -> dict[str, Any]:
    from gridtune.core.conformal import ConformalClassifier, class_coverage, coverage
    from gridtune.errors import DataError
    from gridtune.workflows.trust import CLASSES, fallback, risk_coverage

    fam = fam_ref.calibrate(emb[cal], false_alarm_rate=false_alarm)
    familiar = ~fam.flag(emb[test])
    known_cal = np.isfinite(y[cal])
    known = np.isfinite(y[test])
    yt = y[test][known].astype(int)
    out: dict[str, Any] = {"false_alarm": float(1 - familiar.mean()), "n_cal": int(known_cal.sum()),
                           "n_test": int(known.sum())}
    for mondrian in (False, True):
        cp = ConformalClassifier.fit(p[cal][known_cal], y[cal][known_cal].astype(int), CLASSES,
                                     alpha=0.5, mondrian=mondrian)
        name = "mondrian" if mondrian else "marginal"
        for alpha in ALPHAS:
            try:
                sets = cp.sets(p[test], alpha)
            except DataError as exc:  # too few calibration scenarios (of a class) for alpha
                out[f"{name}@{alpha}"] = {"skipped": str(exc)}
                continue
            single = sets.sum(axis=1) == 1
            answer = np.where(single, sets.argmax(axis=1), -1)
            fb = fallback(single & familiar, answer, y[test], None if times is None else times[test])
            out[f"{name}@{alpha}"] = {
                "coverage": coverage(sets[known], yt),
                "class_coverage": class_coverage(sets[known], yt, CLASSES),
                "single": float(single.mean()), "empty": float((sets.sum(axis=1) == 0).mean()),
                **fb}
        if not mondrian:
            out["curve"] = risk_coverage(cp, p[test], familiar, y[test])
    return out


def timing(args: argparse.Namespace, ck: Path) -> dict[str, Any]:
    """Calibrate on `--data` and predict 10,000 distinct scenarios in a fresh process, one thread."""
    code = f"""
import json, time, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import torch
torch.set_num_threads(1)
from gridtune.grids.view import resolve_data
from gridtune.nn.loadability import uncached
from gridtune.workflows.trust import calibrate, predict
view = resolve_data({args.data!r}, samples={args.samples!r})
pool = list(view.graphs)
if {args.changed!r}:
    pool += resolve_data({args.changed!r}).graphs
n_distinct = min(len(pool), 10000)
graphs = [pool[i % len(pool)] for i in range(10000)]
with uncached():
    t0, c0 = time.perf_counter(), time.process_time()
    calibrate({str(ck)!r}, view, alpha=0.01, threads=1)
    t1, c1 = time.perf_counter(), time.process_time()
    predict({str(ck)!r}, graphs, out={str(Path(args.out) / 'timing_predictions.parquet')!r}, threads=1)
    t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({{"calibrate_wall_s": t1 - t0, "calibrate_cpu_s": c1 - c0, "predict_10000_wall_s": t2 - t1,
                  "predict_10000_cpu_s": c2 - c1, "n_calibration_data": len(view.graphs),
                  "n_distinct": n_distinct}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def opf_intervals(args: argparse.Namespace) -> dict[str, Any]:
    """An `opf` checkpoint on the same data and split (trained if missing), calibrated on its
    solved validation scenarios; per-bus coverage, half-width and MAE per target and bus group on
    the solved test scenarios."""
    import gridtune
    from gridtune.core.conformal import ConformalRegressor
    from gridtune.grids.features import OPF_TARGETS
    from gridtune.grids.split import parse_split, split_indices
    from gridtune.grids.view import resolve_data, task_graphs
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.workflows.trust import (
        LOADING,
        calibrate,
        load_intervals,
        loading_bands,
        opf_and_loading_outputs,
    )

    ck = args.out / "checkpoint-opf"
    if not (ck / "model.safetensors").is_file():
        gridtune.pretrain(args.data, ck, task="opf", samples=args.samples, split=parse_split(args.split),
                          train=gridtune.TrainConfig(epochs=min(args.epochs, 25), patience=10,
                                                     lr_schedule="cosine", seed=args.seed))
    model, meta = load_checkpoint(ck)
    view = resolve_data(args.data, samples=args.samples)
    _, _, te = split_indices(view.statuses, meta["split_seed"], tuple(meta["split_fractions"]))
    test = task_graphs([view.graphs[i] for i in te], "opf")
    o, b = opf_and_loading_outputs(model, test)
    out: dict[str, Any] = {"n_test_scenarios": len(test), "n_test_branch_loadings": int(b["pred"].size)}
    for alpha in (0.1, 0.05):
        calibrate(ck, view, alpha=alpha)
        reg, record = load_intervals(ck)
        if record.get("branch_loading"):
            rec = record["branch_loading"]
            bands = loading_bands(rec["band_edges_percent"], b["pred"])
            blo, bhi = ConformalRegressor.from_dict(rec["intervals"]).intervals(b["pred"], groups=bands)
            inside_b = (b["target"] >= blo[:, 0] - 1e-9) & (b["target"] <= bhi[:, 0] + 1e-9)
            heavy = b["target"] > 80.0
            r = out[f"{LOADING}@{alpha}"] = {
                "coverage": float(inside_b.mean()), "half_width": float(np.mean(bhi - blo) / 2),
                "mae": float(np.mean(np.abs(b["pred"] - b["target"]))), "band_edges": rec["band_edges_percent"],
                "per_band": {int(g): {"n": int((bands == g).sum()), "coverage": float(inside_b[bands == g].mean()),
                                      "half_width": float(np.mean((bhi - blo)[bands == g]) / 2)}
                             for g in np.unique(bands)},
                "coverage_truly_above_80_percent": float(inside_b[heavy].mean()) if heavy.any() else None,
                "n_truly_above_80_percent": int(heavy.sum())}
            print(f"opf interval alpha {alpha:g} {LOADING} coverage {r['coverage']:.4f} half-width "
                  f"{r['half_width']:.4g} MAE {r['mae']:.4g}; per predicted band (edges {rec['band_edges_percent']}): "
                  + ", ".join(f"{g}: n {v['n']} coverage {v['coverage']:.4f} half-width {v['half_width']:.4g}"
                              for g, v in r["per_band"].items())
                  + f"; where truly loaded > 80% ({r['n_truly_above_80_percent']}): "
                  f"{r['coverage_truly_above_80_percent']}")
        lo, hi = reg.intervals(o["pred"], groups=o["group"])
        inside = (o["target"] >= lo - 1e-12) & (o["target"] <= hi + 1e-12)
        for j, c in enumerate(OPF_TARGETS):
            for g, name in ((1, "generator"), (0, "other")):
                sel = o["group"] == g
                if c in ("pg_pu", "qg_pu") and g == 0:
                    continue  # zero by construction
                out[f"{c}/{name}@{alpha}"] = {
                    "coverage": float(inside[sel, j].mean()),
                    "half_width": float(np.mean((hi - lo)[sel, j]) / 2),
                    "mae": float(np.mean(np.abs(o["pred"][sel, j] - o["target"][sel, j])))}
                r = out[f"{c}/{name}@{alpha}"]
                print(f"opf interval alpha {alpha:g} {c:<7} {name:<9} coverage {r['coverage']:.4f} "
                      f"half-width {r['half_width']:.4g} MAE {r['mae']:.4g}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="case118", help="recipe, case name or dataset directory (built)")
    ap.add_argument("--samples", type=int, help="first N scenarios of --data")
    ap.add_argument("--changed", help="changed-grid data (recipe or directory, built)")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint (default: OUT/checkpoint, trained if missing)")
    ap.add_argument("--split", default="0.4,0.15,0.45", help="train,val,test fractions of --data")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", type=int, default=5, help="calibration/test cuts")
    ap.add_argument("--false-alarm", type=float, default=0.01)
    ap.add_argument("--recalibrate", type=int, default=200, help="changed-grid labels to re-calibrate on")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--opf", action="store_true",
                    help="also an OPF checkpoint's per-bus intervals (trained if missing)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from sklearn.metrics import roc_auc_score

    from gridtune.core.conformal import ConformalClassifier, class_coverage, coverage
    from gridtune.core.familiarity import Familiarity
    from gridtune.grids.split import split_indices
    from gridtune.grids.view import resolve_data
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.workflows.trust import CLASSES, _labels, plot_risk_coverage

    args.out.mkdir(parents=True, exist_ok=True)
    ck = args.checkpoint or args.out / "checkpoint"
    if not (ck / "model.safetensors").is_file():
        train(args, ck)
    model, meta = load_checkpoint(ck)
    view = resolve_data(args.data, samples=args.samples)
    tr, va, te = split_indices(view.statuses, meta["split_seed"], tuple(meta["split_fractions"]))
    t = time.perf_counter()
    p, emb = outputs(model, view.graphs, args.out / f"outputs-{meta_digest(ck)}-data.npz")
    print(f"outputs of {len(view.graphs)} scenarios: {time.perf_counter() - t:.1f} s", flush=True)
    y = _labels(view.graphs)
    times = None if view.solve_time_s is None else np.asarray(view.solve_time_s, dtype=float)
    fam_ref = Familiarity.fit(emb[tr])
    pool = np.concatenate([va, te])
    rng = np.random.default_rng(args.seed)
    cuts = []
    for _ in range(args.splits):
        perm = pool[rng.permutation(pool.size)]
        cal, test = np.sort(perm[:va.size]), np.sort(perm[va.size:])
        cuts.append(one_cut(p, emb, y, times, cal, test, fam_ref, args.false_alarm))
    result: dict[str, Any] = {"data": view.name, "n": len(view.graphs), "checkpoint": str(ck),
                              "split": meta["split_fractions"], "n_train": int(tr.size),
                              "test_auroc": float(roc_auc_score(y[te][np.isfinite(y[te])],
                                                                p[te][np.isfinite(y[te])])),
                              "cuts": cuts}
    print(f"data {view.name}: {len(view.graphs)} scenarios, train {tr.size}; per cut calibration "
          f"{cuts[0]['n_cal']} and test {cuts[0]['n_test']} labelled; model test AUROC "
          f"{result['test_auroc']:.4f}")
    print(f"familiarity false alarms on test (target {args.false_alarm:g}): "
          f"{stats([c['false_alarm'] for c in cuts])}")
    for name in ("marginal", "mondrian"):
        for alpha in ALPHAS:
            rows = [c[f"{name}@{alpha}"] for c in cuts if "coverage" in c[f"{name}@{alpha}"]]
            if not rows:
                print(f"{name:<9} alpha {alpha:<5g} skipped: {cuts[0][f'{name}@{alpha}']['skipped']}")
                continue
            print(f"{name:<9} alpha {alpha:<5g} coverage {stats([r['coverage'] for r in rows])} "
                  f"(target {1 - alpha:.2f}; feasible {stats([r['class_coverage']['feasible'] for r in rows])}, "
                  f"infeasible {stats([r['class_coverage']['infeasible'] for r in rows])}); "
                  f"answered {stats([r['answered_share'] for r in rows])}, error among answered "
                  f"{stats([r['error_among_answered'] for r in rows])}"
                  + (f", solver time saved {stats([r.get('solver_time_saved_share') for r in rows])}"
                     if times is not None else ""))
    # what any threshold on the model's confidence could reach at 80% answered (chosen in
    # hindsight on the test part): whether a target is within this model's reach at all
    conf = np.maximum(p, 1 - p)
    reach = []
    for c in range(args.splits):
        test = np.sort(pool[np.random.default_rng(c).permutation(pool.size)][va.size:])
        test = test[np.isfinite(y[test])]
        order = test[np.argsort(-conf[test])][:int(0.8 * test.size)]
        reach.append(float(np.mean((p[order] >= 0.5) != (y[order] == 1))))
    result["oracle_error_at_80_percent_answered"] = reach
    print(f"error among the 80% most confident test scenarios (hindsight, any threshold): {stats(reach)}")
    chosen = {**cuts[0]["marginal@0.01"], "alpha": 0.01}
    plot_risk_coverage(cuts[0]["curve"], args.out / "risk_coverage.png",
                       chosen if "coverage" in chosen else None,
                       title=f"{view.name}: fallback policy (cut 0)")

    if args.changed:
        changed = resolve_data(args.changed)
        pc, ec = outputs(model, changed.graphs, args.out / f"outputs-{meta_digest(ck)}-changed.npz")
        yc = _labels(changed.graphs)
        fam = Familiarity.fit(emb[tr]).calibrate(emb[va], false_alarm_rate=args.false_alarm)
        s_in, s_out = fam.score(emb[te]), fam.score(ec)
        lab = np.r_[np.zeros(s_in.size), np.ones(s_out.size)]
        auroc = float(roc_auc_score(lab, np.r_[s_in, s_out]))
        kc = np.isfinite(yc)
        result["changed"] = {"data": changed.name, "n": len(changed.graphs), "familiarity_auroc": auroc,
                             "detection_rate": float(np.mean(s_out > fam.threshold)),
                             "model_auroc": float(roc_auc_score(yc[kc], pc[kc]))}
        batches = {}
        for size in (10, 50):
            draws = np.random.default_rng(args.seed)
            p_in = [fam.shift_pvalue(s_in[draws.choice(s_in.size, size, replace=False)]) for _ in range(200)]
            p_out = [fam.shift_pvalue(s_out[draws.choice(s_out.size, size, replace=False)]) for _ in range(200)]
            batches[str(size)] = {"false_alarm": float(np.mean(np.array(p_in) < 0.01)),
                                  "detection": float(np.mean(np.array(p_out) < 0.01))}
        result["changed"]["batch_shift_test_at_0.01"] = batches
        print("batch shift test at p < 0.01 (200 random batches each): " + "; ".join(
            f"{k} scenarios: changed grid detected {v['detection']:.3f}, same grid false alarm "
            f"{v['false_alarm']:.3f}" for k, v in batches.items()))
        others = {}
        for method, k in (("knn", 5), ("knn", 20), ("mahalanobis", 0)):
            alt = Familiarity.fit(emb[tr], method=method, k=max(k, 1))
            a_in, a_out = alt.score(emb[te]), alt.score(ec)
            others[f"{method}" + (f"-k{k}" if method == "knn" else "")] = float(
                roc_auc_score(lab, np.r_[a_in, a_out]))
        result["changed"]["familiarity_auroc_other_scores"] = others
        print("familiarity AUROC of other scores: " + ", ".join(f"{k} {v:.4f}" for k, v in others.items()))
        print(f"changed grid {args.changed}: {len(changed.graphs)} scenarios; familiarity AUROC "
              f"{auroc:.4f} against {s_in.size} test scenarios of {view.name}; flagged "
              f"{result['changed']['detection_rate']:.3f} at the calibrated threshold; model AUROC there "
              f"{result['changed']['model_auroc']:.4f}")
        known_va = np.isfinite(y[va])
        before = ConformalClassifier.fit(p[va][known_va], y[va][known_va].astype(int), CLASSES, alpha=0.5)
        idx = np.flatnonzero(kc)
        rng = np.random.default_rng(args.seed)
        idx = idx[rng.permutation(idx.size)]
        re_cal, re_test = idx[:args.recalibrate], idx[args.recalibrate:]
        after = ConformalClassifier.fit(pc[re_cal], yc[re_cal].astype(int), CLASSES, alpha=0.5)
        rows = {}
        for alpha in ALPHAS:
            r = {}
            for label, cp in (("before", before), ("after", after)):
                try:
                    sets = cp.sets(pc[re_test], alpha)
                except Exception as exc:  # too few re-calibration labels for this alpha
                    r[label] = {"skipped": str(exc)}
                    continue
                r[label] = {"coverage": coverage(sets, yc[re_test].astype(int)),
                            "class_coverage": class_coverage(sets, yc[re_test].astype(int), CLASSES),
                            "single": float((sets.sum(axis=1) == 1).mean())}
            rows[str(alpha)] = r
            text = ", ".join(f"{k} {v['coverage']:.4f} (single {v['single']:.3f})" if "coverage" in v
                             else f"{k}: {v['skipped']}" for k, v in r.items())
            print(f"changed grid coverage at alpha {alpha:g} (target {1 - alpha:.2f}), calibrated on "
                  f"{view.name} vs re-calibrated on {re_cal.size} changed-grid labels: {text}")
        result["changed"]["recalibration"] = rows

    if args.opf:
        result["opf_intervals"] = opf_intervals(args)
    if not args.no_timing:
        result["timing"] = timing(args, ck)
        print(f"timing (one thread, LPs solved afresh): {json.dumps(result['timing'])}")
    (args.out / "bench_trust.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"written {args.out / 'bench_trust.json'}, {args.out / 'risk_coverage.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
