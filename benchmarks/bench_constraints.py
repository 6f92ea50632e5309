"""Constraint benchmark: case30 -> case118 fine-tuning with and without physical constraints.

Target (issue 5), on held-out target scenarios with 200 target labels:
    feasibility head + the shipped `monotone_load` constraint set: Lagrangian fine-tuning brings the
        monotonicity violation rate to <= 1% of perturbation pairs, with AUROC within 0.01 of
        unconstrained fine-tuning;
    OPF head + the shipped `power_balance` constraint set: Lagrangian fine-tuning cuts the system
        power-balance residual (mean violation of the loss band, MW) at least 10x against
        unconstrained fine-tuning, with every OPF MAE within 5% of it.
Baseline: unconstrained fine-tuning (same checkpoint, labels, seed, strategy), measured in the
same run. A table per task compares unconstrained, penalty (three weights), Lagrangian and
augmented Lagrangian on violation, task metric and wall time per epoch: mean ± std over seeds,
ratios against the unconstrained mean.

The OPF model's balance layer (`ModelConfig.balance_pg`) closes the system balance by
construction, which leaves a power-balance constraint nothing to do. By default (`--balance-layer
off`) the OPF checkpoint is re-fitted on the source without the layer and every variant fine-tunes
that; the layer keeps one row of its own (the architectural alternative), and one row trains on
the shipped `nodal_balance` set. Every OPF row reports both the system and the nodal balance.

Constrained rows (any formulation) evaluate their constraint term on `--unlabeled` fresh target
scenarios (constraints need no labels; 4/5 train the term, 1/5 selects the checkpoint: the best
validation score among epochs whose violation rate there is within the formulation's
`target_rate`, `gridtune.finetune.trainer.fit`'s `val_violation`). Unconstrained rows never see
them. `--unlabeled 0` keeps the labelled batches (and the labelled validation split).

Rows go to `<out>/rows.jsonl` as they finish; a rerun with the same `--out` skips measured
(task, variant, seed) rows, so an interrupted run resumes.

It never builds the large datasets: pass built dataset directories (or recipes whose cache holds
the data). Pre-trained source checkpoints are trained here when not given.

    python benchmarks/bench_constraints.py --source case30 \
        --target case118 --out runs/bench-constraints --seeds 0 1 2 \
        [--checkpoint-feasibility runs/case30-feas --checkpoint-opf runs/case30-opf]

    python benchmarks/bench_constraints.py --synthetic --out /tmp/bench-constraints  # self-check
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gridtune.specs import RESOURCES  # noqa: E402  (after the path insert)

SPECS = {"feasibility": RESOURCES / "constraints" / "monotone_load.toml",
         "opf": RESOURCES / "constraints" / "power_balance.toml"}
PENALTY_WEIGHTS = (0.1, 1.0, 10.0)
BASE_MVA = 100.0  # system base of the per-unit features (MATPOWER cases)
LAYER_ROW = "balance layer (no constraint)"
NODAL_ROW = "nodal-balance spec"


def variants(task: str, balance_layer: str = "off") -> list[tuple[str, str | None, dict[str, Any]]]:
    """(label, formulation, settings) of every row of `task`'s table; `None` = unconstrained.

    With the balance layer off the OPF table gets one more row: the layer itself (unconstrained
    fine-tuning of the checkpoint as trained, `balance_pg=True`), the architectural alternative
    that closes the system balance by construction.
    """
    rows: list[tuple[str, str | None, dict[str, Any]]] = [("unconstrained", None, {})]
    rows += [(f"penalty w={w:g}", "penalty", {"scale": w}) for w in PENALTY_WEIGHTS]
    rows += [("lagrangian", "lagrangian", {}), ("augmented-lagrangian", "augmented-lagrangian", {})]
    if task == "opf" and balance_layer == "off":
        rows += [(NODAL_ROW, "spec", {}), (LAYER_ROW, None, {})]
    return rows


def spec_with(base: Path, formulation: str, settings: dict[str, Any], out: Path) -> Path:
    """A copy of `base` whose `[formulation.<name>]` table gets `settings` (shipped specs keep
    theirs for the Lagrangian ones; penalty weights are added here, beside any penalty settings
    the spec has, e.g. `target_rate`)."""
    from gridtune.specs import read_toml

    doc = read_toml(base)
    existing = doc.get("formulation", {}).get(formulation)
    lines = [line for line in base.read_text().splitlines()]
    added = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    if existing is None:
        lines += ["", f"[formulation.{formulation}]"] + added
    elif set(settings) & set(existing):
        raise SystemExit(f"{base} already sets {sorted(set(settings) & set(existing))} in "
                         f"[formulation.{formulation}]; edit it instead")
    else:
        at = lines.index(f"[formulation.{formulation}]") + 1
        lines[at:at] = added
    path = out / f"{base.stem}-{formulation}-{'-'.join(f'{k}{v}' for k, v in settings.items())}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def built(spec: str) -> Any:
    """The data of a recipe or dataset directory, never building a large dataset."""
    from gridtune.errors import DataError
    from gridtune.grids.build import default_directory
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.recipe import recipe_for

    p = Path(spec)
    if not p.is_dir():
        d = default_directory(recipe_for(spec))
        if not (d / "manifest.json").is_file() or (d / "parts").is_dir():
            raise DataError(f"dataset for `{spec}` is not built (expected it in `{d}`); build it "
                            f"first with `gridtune data build {spec}`")
    return open_dataset(spec, progress=False)


def without_balance_layer(checkpoint: Path, source: Any, out: Path, *, epochs: int, seed: int
                          ) -> Path:
    """An OPF checkpoint whose model has no balance layer (`ModelConfig.balance_pg=False`).

    A checkpoint trained with the layer never learned to close the balance itself (its head's
    raw generation is off by the shift the layer adds: 165 MW on case30 for /work/runs/case30-opf),
    so switching the flag off alone would hand the constrained variants a broken start. The
    weights are copied with the flag off and re-fitted on the source (`full` fine-tuning on every
    labelled source training graph, `epochs` epochs); a checkpoint already without the layer is
    used as it is.
    """
    from gridtune.finetune.api import finetune
    from gridtune.finetune.trainer import TrainConfig
    from gridtune.nn.checkpoint import read_config
    from gridtune.nn.pretrain import resolve_data, split_indices, task_graphs

    meta = read_config(checkpoint)
    if not meta["model"].get("balance_pg", True):
        return checkpoint
    dest = out / f"{checkpoint.name}-no-balance-layer"
    if (dest / "finetune.json").is_file():
        return dest
    flipped = out / f"{checkpoint.name}-balance-off-unfitted"
    flipped.mkdir(parents=True, exist_ok=True)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["balance_pg"] = False
    (flipped / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(checkpoint / "model.safetensors", flipped / "model.safetensors")
    view = resolve_data(source)
    tr, _, _ = split_indices(view.statuses, seed)
    labels = len(task_graphs([view.graphs[i] for i in tr], "opf"))
    print(f"re-fitting {checkpoint} without the balance layer on the source ({labels} labels, "
          f"{epochs} epochs) ...", flush=True)
    finetune(flipped, source, labels=labels, strategy="full", seed=seed, out_dir=dest,
             with_scratch=False, train_config=TrainConfig(epochs=epochs, patience=10, seed=seed))
    return dest


def test_violations(run_dir: Path, data: Any, task: str, seed: int, specs: dict[str, Path]
                    ) -> dict[str, dict[str, float]]:
    """Violations of the model saved in `run_dir` on its test split, for every report spec (the
    same numbers whichever constraint, if any, the model was trained with)."""
    from gridtune.constraints import constraint_report
    from gridtune.finetune.api import load_finetuned
    from gridtune.finetune.trainer import make_loader
    from gridtune.nn.pretrain import resolve_data, split_indices, task_graphs

    model, _ = load_finetuned(run_dir)
    view = resolve_data(data)
    _, _, te = split_indices(view.statuses, seed)
    loader = make_loader(task_graphs([view.graphs[i] for i in te], task), 256, shuffle=False)
    out: dict[str, dict[str, float]] = {}
    for spec in specs.values():
        out.update(constraint_report(model, loader, spec, task))
    return out


def row_key(r: dict[str, Any]) -> tuple[str, str, int]:
    return (r["task"], r["variant"], int(r["seed"]))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows already measured (`rows.jsonl`, one JSON object a line); a torn last line is dropped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_task(task: str, checkpoints: dict[str, Path], data: Any, args: argparse.Namespace,
             done: set[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """Measure every (variant, seed) of `task` not in `done`, appending each row to rows.jsonl."""
    from gridtune.constraints.spec import load_constraint_set
    from gridtune.finetune.api import finetune
    from gridtune.finetune.trainer import TrainConfig

    spec = getattr(args, f"{task}_spec")
    main = load_constraint_set(spec, task).names[0]
    report = {"main": spec} if task == "feasibility" else {"main": spec, "nodal": args.nodal_spec}
    rows = []
    for seed in args.seeds:
        for label, formulation, settings in variants(task, args.balance_layer):
            if (task, label, seed) in done or (args.variants and label not in args.variants):
                continue
            run_dir = args.out / task / f"seed{seed}" / label.replace(" ", "_").replace("=", "")
            config = TrainConfig(epochs=args.epochs, patience=args.patience, lr=args.lr, seed=seed,
                                 lr_schedule=args.lr_schedule)
            ckpt = checkpoints["layer" if label == LAYER_ROW else "main"]
            kw: dict[str, Any] = {}
            if formulation == "spec":  # the nodal spec, with the formulation it names
                kw = {"constraints": args.nodal_spec,
                      "formulation": load_constraint_set(args.nodal_spec, task).formulation.get(
                          "name", "lagrangian")}
            elif formulation is not None:
                kw = {"constraints": spec_with(spec, formulation, settings, args.out)
                      if settings else spec, "formulation": formulation}
            start = time.perf_counter()
            # constrained rows evaluate their constraints on unlabelled target scenarios (and
            # select checkpoints on them); unconstrained rows never use them
            kw["unlabeled"] = args.unlabeled if kw else 0
            r = finetune(ckpt, data, labels=args.labels, strategy=args.strategy, seed=seed,
                         out_dir=run_dir, with_scratch=False, train_config=config, **kw)
            viol = test_violations(run_dir, data, task, seed, report)
            row = {"task": task, "variant": label, "seed": seed, "checkpoint": str(ckpt),
                   "trained_on": str(kw["constraints"]) if formulation else None, "main": main,
                   "unlabeled": kw["unlabeled"], "lr_schedule": args.lr_schedule,
                   "formulation": kw.get("formulation"), "violations": viol,
                   "metrics": r["metrics"], "epochs_run": r["epochs_run"],
                   "best_epoch": r["best_epoch"],
                   "s_per_epoch": r["train_wall_time_s"] / max(r["epochs_run"], 1),
                   "wall_time_s": time.perf_counter() - start}
            if "constraints" in r:
                row["multipliers"] = r["constraints"]["formulation"]["multipliers"]
            rows.append(row)
            with (args.out / "rows.jsonl").open("a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")
            main_c = viol[main]
            print(f"  {task:<12} seed {seed} {label:<28} rate {main_c['violation_rate']:.4f}  "
                  f"mean {main_c['mean_violation']:.3g}  {primary(task, r['metrics'])}", flush=True)
    return rows


def primary(task: str, m: dict[str, Any]) -> str:
    if task == "feasibility":
        return f"AUROC {m.get('auroc', float('nan')):.4f}"
    return "MAE " + " ".join(f"{k[4:]}={m[k]:.4g}" for k in m if k.startswith("mae_"))


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (task, variant): mean and std over seeds of every violation and metric, with ratios
    against unconstrained fine-tuning measured on the same seeds."""
    order = {(t, label): i for t in ("feasibility", "opf")
             for i, (label, _, _) in enumerate(variants(t), start=100 if t == "opf" else 0)}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: order.get((r["task"], r["variant"]), 999)):
        groups.setdefault((r["task"], r["variant"]), []).append(r)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (task, variant), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        agg: dict[str, Any] = {"seeds": [r["seed"] for r in rs], "main": rs[0]["main"],
                               "s_per_epoch": _stats([r["s_per_epoch"] for r in rs]),
                               "epochs_run": _stats([float(r["epochs_run"]) for r in rs])}
        for c in rs[0]["violations"]:
            for k in ("violation_rate", "mean_violation", "max_violation"):
                agg[f"{c}/{k}"] = _stats([r["violations"][c][k] for r in rs])
        for k in rs[0]["metrics"]:
            vals = [r["metrics"].get(k) for r in rs]
            if all(isinstance(v, (int, float)) and v is not None for v in vals):
                agg[k] = _stats([float(v) for v in vals])
        out[(task, variant)] = agg
    for (task, _variant), agg in out.items():
        base = out.get((task, "unconstrained"))
        if base is None or base["seeds"] != agg["seeds"]:
            continue
        main_c = agg["main"]
        b, v = base[f"{main_c}/mean_violation"][0], agg[f"{main_c}/mean_violation"][0]
        agg["violation_cut"] = b / v if v > 0 else (math.inf if b > 0 else math.nan)
        if task == "feasibility":
            agg["auroc_change"] = agg["auroc"][0] - base["auroc"][0]
        else:
            agg["mae_change"] = {k: agg[k][0] / base[k][0] - 1 for k in base
                                 if k.startswith("mae_") and k in agg and base[k][0]
                                 and k != "mae_change"}
    return out


def check(agg: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The issue's target (means over seeds), against unconstrained fine-tuning."""
    out: dict[str, Any] = {}
    lag = agg.get(("feasibility", "lagrangian"))
    if lag and "auroc_change" in lag:
        rate = lag[f"{lag['main']}/violation_rate"][0]
        out["monotonicity"] = {
            "violation_rate_unconstrained": agg[("feasibility", "unconstrained")][
                f"{lag['main']}/violation_rate"][0],
            "violation_rate_lagrangian": rate, "auroc_change": lag["auroc_change"],
            "met": rate <= 0.01 and abs(lag["auroc_change"]) <= 0.01}
    lag = agg.get(("opf", "lagrangian"))
    if lag and "mae_change" in lag:
        base = agg[("opf", "unconstrained")][f"{lag['main']}/mean_violation"][0]
        out[lag["main"]] = {
            "residual_unconstrained_mw": base * BASE_MVA,
            "residual_lagrangian_mw": lag[f"{lag['main']}/mean_violation"][0] * BASE_MVA,
            "residual_cut": lag["violation_cut"], "mae_change": lag["mae_change"],
            # a baseline with no residual (the balance layer) leaves nothing to cut
            "met": (None if base == 0 else lag["violation_cut"] >= 10
                    and all(v <= 0.05 for v in lag["mae_change"].values()))}
    return out


def _pm(s: tuple[float, float], fmt: str = ".4f", scale: float = 1.0) -> str:
    return f"{s[0] * scale:{fmt}} ± {s[1] * scale:{fmt}}"


def _ratio(x: float) -> str:
    if math.isinf(x):
        return "∞ (none left)"
    return "—" if math.isnan(x) else f"{x:.3g}x"


def nodal(a: dict[str, Any]) -> str:
    """The key of the OPF row's second reported constraint (nodal balance)."""
    return next(k for k in a if k.endswith("/mean_violation") and not k.startswith(a["main"] + "/"))


def table(agg: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Markdown tables (mean ± std over seeds); ratios against unconstrained fine-tuning."""
    parts = []
    feas = [(v, a) for (t, v), a in agg.items() if t == "feasibility"]
    if feas:
        lines = ["| variant | seeds | violating pairs (%) | mean violation | cut vs unconstrained "
                 "| AUROC | ΔAUROC | s / epoch |", "|---|---|---|---|---|---|---|---|"]
        for v, a in feas:
            lines.append(
                f"| {v} | {len(a['seeds'])} | {_pm(a[a['main'] + '/violation_rate'], '.2f', 100)} "
                f"| {_pm(a[a['main'] + '/mean_violation'], '.2e')} "
                f"| {_ratio(a.get('violation_cut', math.nan))} | {_pm(a['auroc'])} "
                f"| {a.get('auroc_change', math.nan):+.4f} | {a['s_per_epoch'][0]:.2f} |")
        parts.append("\n".join(lines))
    opf = [(v, a) for (t, v), a in agg.items() if t == "opf"]
    if opf:
        maes = [k for k in opf[0][1] if k.startswith("mae_") and k != "mae_change"]
        head = ("| variant | seeds | balance violation (MW) | cut vs unconstrained "
                "| nodal mismatch (p.u.) | " + " | ".join(f"MAE {k[4:]} (Δ)" for k in maes)
                + " | s / epoch |")
        lines = [head, "|" + "---|" * (6 + len(maes))]
        for v, a in opf:
            ch = a.get("mae_change", {})
            cells = " | ".join(f"{a[k][0]:.4g} ({ch[k] * 100:+.1f}%)" if k in ch
                               else f"{a[k][0]:.4g}" for k in maes)
            lines.append(
                f"| {v} | {len(a['seeds'])} | {_pm(a[a['main'] + '/mean_violation'], '.3g', BASE_MVA)} "
                f"| {_ratio(a.get('violation_cut', math.nan))} "
                f"| {_pm(a[nodal(a)], '.3g')} | {cells} "
                f"| {a['s_per_epoch'][0]:.2f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="case30")
    ap.add_argument("--target", default="case118")
    ap.add_argument("--checkpoint-feasibility", type=Path)
    ap.add_argument("--checkpoint-opf", type=Path)
    ap.add_argument("--tasks", nargs="+", default=["feasibility", "opf"], choices=list(SPECS))
    ap.add_argument("--feasibility-spec", type=Path, default=SPECS["feasibility"])
    ap.add_argument("--opf-spec", type=Path, default=SPECS["opf"])
    ap.add_argument("--nodal-spec", type=Path, default=RESOURCES / "constraints" / "nodal_balance.toml",
                    help="OPF: reported on every row, and trained on in one extra row")
    ap.add_argument("--balance-layer", choices=("off", "on"), default="off",
                    help="OPF model's balance layer (`balance_pg`) while fine-tuning; `on` closes "
                         "the system balance by construction and leaves the constraints nothing "
                         "to do (default: off; the layer then gets a row of its own)")
    ap.add_argument("--refit-epochs", type=int, default=40,
                    help="epochs re-fitting an OPF checkpoint on the source without its layer")
    ap.add_argument("--variants", nargs="+", help="measure only these rows (labels as in the table)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=("cosine",), default=None,
                    help="learning-rate schedule of every row (default: constant)")
    ap.add_argument("--unlabeled", type=int, default=1000,
                    help="unlabelled target scenarios for the constrained rows: their constraint "
                         "term runs on 4/5 of them, checkpoint selection checks the other 1/5 "
                         "(0: the labelled batches, as before; default: 1000)")
    ap.add_argument("--pretrain-epochs", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=64, help="model width when pre-training here")
    ap.add_argument("--layers", type=int, default=4, help="message-passing blocks when pre-training")
    ap.add_argument("--synthetic", action="store_true",
                    help="self-check on tiny synthetic grids (case9 -> case14), seconds not hours")
    args = ap.parse_args(argv)
    for p in (args.feasibility_spec, args.opf_spec, args.nodal_spec):
        if not p.is_file():
            ap.error(f"constraint spec `{p}` does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    from gridtune.nn.pretrain import pretrain

    if args.synthetic:
        from tests.nn.synthetic import graphs

        source, target = graphs("case9", 60, seed=0), graphs("case14", 80, seed=1)
        args.labels, args.epochs, args.patience = min(args.labels, 30), min(args.epochs, 4), 4
        args.pretrain_epochs, size = min(args.pretrain_epochs, 3), {"hidden": 16, "layers": 2}
        args.refit_epochs = min(args.refit_epochs, 2)
        args.unlabeled = min(args.unlabeled, 20)
    else:
        source, target = built(args.source), built(args.target)
        size = {"hidden": args.hidden, "layers": args.layers}
    rows_path = args.out / "rows.jsonl"
    rows = read_rows(rows_path)
    done = {row_key(r) for r in rows}
    if done:
        print(f"resuming: {len(done)} rows already in {rows_path}", flush=True)
    for task in args.tasks:
        ckpt = getattr(args, f"checkpoint_{task}")
        if ckpt is None:
            ckpt = args.out / f"pretrain-{task}"
            if not (ckpt / "config.json").is_file() and not any(ckpt.glob("*.safetensors")):
                print(f"pre-training {task} on the source ...", flush=True)
                pretrain(source, task=task, out_dir=ckpt, epochs=args.pretrain_epochs,
                         seed=args.seeds[0], **size)
        checkpoints = {"main": ckpt, "layer": ckpt}
        if task == "opf" and args.balance_layer == "off":
            checkpoints["main"] = without_balance_layer(ckpt, source, args.out,
                                                        epochs=args.refit_epochs, seed=args.seeds[0])
        rows += run_task(task, checkpoints, target, args, done)
    agg = aggregate(rows)
    result = {"rows": rows, "aggregate": [{"task": t, "variant": v, **a} for (t, v), a in agg.items()],
              "check": check(agg), "labels": args.labels, "seeds": args.seeds,
              "balance_layer": args.balance_layer, "strategy": args.strategy,
              "unlabeled": args.unlabeled, "lr_schedule": args.lr_schedule,
              "source": "synthetic" if args.synthetic else args.source,
              "target": "synthetic" if args.synthetic else args.target}
    (args.out / "bench_constraints.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "bench_constraints.md").write_text(table(agg) + "\n")
    print("\n" + table(agg))
    for name, c in result["check"].items():
        print(f"\n{name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
