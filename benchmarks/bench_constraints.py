"""Constraint benchmark: case30 -> case118 fine-tuning with and without physical constraints.

Target (issue 5), on held-out target scenarios with 200 target labels:
    feasibility head + constraints/monotone_load.toml: Lagrangian fine-tuning brings the
        monotonicity violation rate to <= 1% of perturbation pairs, with AUROC within 0.01 of
        unconstrained fine-tuning;
    OPF head + constraints/power_balance.toml: Lagrangian fine-tuning cuts the system
        power-balance residual (mean violation, p.u.) at least 10x against unconstrained
        fine-tuning, with every OPF MAE within 5% of it.
Baseline: unconstrained fine-tuning (same checkpoint, labels, seed, strategy), measured in the
same run. A table compares unconstrained, penalty (three weights), Lagrangian and augmented
Lagrangian on violation, task metric and wall time per epoch.

It never builds the large datasets: pass built dataset directories (or recipes whose cache holds
the data). Pre-trained source checkpoints are trained here when not given.

    python benchmarks/bench_constraints.py --source datasets/case30.toml \
        --target datasets/case118.toml --out runs/bench-constraints \
        [--checkpoint-feasibility runs/case30-feas --checkpoint-opf runs/case30-opf]

    python benchmarks/bench_constraints.py --synthetic --out /tmp/bench-constraints  # self-check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPECS = {"feasibility": ROOT / "constraints" / "monotone_load.toml",
         "opf": ROOT / "constraints" / "power_balance.toml"}
PENALTY_WEIGHTS = (0.1, 1.0, 10.0)


def variants() -> list[tuple[str, str | None, dict[str, Any]]]:
    """(label, formulation, settings) of every row of the table; `None` = unconstrained."""
    rows: list[tuple[str, str | None, dict[str, Any]]] = [("unconstrained", None, {})]
    rows += [(f"penalty w={w:g}", "penalty", {"scale": w}) for w in PENALTY_WEIGHTS]
    rows += [("lagrangian", "lagrangian", {}), ("augmented-lagrangian", "augmented-lagrangian", {})]
    return rows


def spec_with(base: Path, formulation: str, settings: dict[str, Any], out: Path) -> Path:
    """A copy of `base` whose `[formulation.<name>]` table gets `settings` (shipped specs keep
    theirs for the Lagrangian ones; penalty weights are added here)."""
    from gridtune.specs import read_toml

    doc = read_toml(base)
    table = dict(doc.get("formulation", {}).get(formulation, {}))
    table.update(settings)
    lines = [line for line in base.read_text().splitlines()]
    if table and formulation not in doc.get("formulation", {}):
        lines += ["", f"[formulation.{formulation}]"] + [f"{k} = {json.dumps(v)}"
                                                         for k, v in settings.items()]
    elif settings:
        raise SystemExit(f"{base} already sets [formulation.{formulation}]; edit it instead")
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


def unconstrained_violations(run_dir: Path, data: Any, task: str, seed: int, spec: Path
                             ) -> dict[str, dict[str, float]]:
    """Violations of a model fine-tuned without constraints, on the same test split."""
    from gridtune.constraints import constraint_report
    from gridtune.finetune.api import load_finetuned
    from gridtune.finetune.trainer import make_loader
    from gridtune.nn.pretrain import resolve_data, split_indices, task_graphs

    model, _ = load_finetuned(run_dir)
    view = resolve_data(data)
    _, _, te = split_indices(view.statuses, seed)
    test = task_graphs([view.graphs[i] for i in te], task)
    return constraint_report(model, make_loader(test, 256, shuffle=False), spec, task)


def run_task(task: str, checkpoint: Path, data: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from gridtune.finetune.api import finetune
    from gridtune.finetune.trainer import TrainConfig

    spec = getattr(args, f"{task}_spec")
    rows = []
    for label, formulation, settings in variants():
        run_dir = args.out / task / label.replace(" ", "_").replace("=", "")
        config = TrainConfig(epochs=args.epochs, patience=args.patience, lr=args.lr, seed=args.seed)
        start = time.perf_counter()
        if formulation is None:
            r = finetune(checkpoint, data, labels=args.labels, strategy=args.strategy,
                         seed=args.seed, out_dir=run_dir, with_scratch=False, train_config=config)
            viol = unconstrained_violations(run_dir, data, task, args.seed, spec)
        else:
            s = spec_with(spec, formulation, settings, args.out) if settings else spec
            r = finetune(checkpoint, data, labels=args.labels, strategy=args.strategy,
                         seed=args.seed, out_dir=run_dir, with_scratch=False, train_config=config,
                         constraints=s, formulation=formulation, save=False)
            viol = r["constraints"]["test"]
        (name, v), = viol.items()
        row = {"task": task, "variant": label, "constraint": name,
               "violation_rate": v["violation_rate"], "mean_violation": v["mean_violation"],
               "max_violation": v["max_violation"], "metrics": r["metrics"],
               "epochs_run": r["epochs_run"],
               "s_per_epoch": r["train_wall_time_s"] / max(r["epochs_run"], 1),
               "wall_time_s": time.perf_counter() - start}
        if formulation is not None:
            row["multipliers"] = r["constraints"]["formulation"]["multipliers"]
        rows.append(row)
        print(f"  {task:<12} {label:<22} rate {row['violation_rate']:.4f}  mean "
              f"{row['mean_violation']:.3g}  {primary(task, r['metrics'])}", flush=True)
    return rows


def primary(task: str, m: dict[str, Any]) -> str:
    if task == "feasibility":
        return f"AUROC {m.get('auroc', float('nan')):.4f}"
    return "MAE " + " ".join(f"{k[4:]}={m[k]:.4g}" for k in m if k.startswith("mae_"))


def check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's target, against unconstrained fine-tuning."""
    by = {(r["task"], r["variant"]): r for r in rows}
    out: dict[str, Any] = {}
    base, lag = by.get(("feasibility", "unconstrained")), by.get(("feasibility", "lagrangian"))
    if base and lag:
        d_auroc = (lag["metrics"].get("auroc") or math.nan) - (base["metrics"].get("auroc") or math.nan)
        out["monotonicity"] = {
            "violation_rate_unconstrained": base["violation_rate"],
            "violation_rate_lagrangian": lag["violation_rate"], "auroc_change": d_auroc,
            "met": lag["violation_rate"] <= 0.01 and abs(d_auroc) <= 0.01}
    base, lag = by.get(("opf", "unconstrained")), by.get(("opf", "lagrangian"))
    if base and lag and base["constraint"] == "power_balance":
        ratio = (base["mean_violation"] / lag["mean_violation"] if lag["mean_violation"] > 0
                 else math.inf if base["mean_violation"] > 0 else math.nan)
        mae = {k: lag["metrics"][k] / base["metrics"][k] for k in base["metrics"]
               if k.startswith("mae_") and base["metrics"][k]}
        out["power_balance"] = {
            "residual_unconstrained_pu": base["mean_violation"],
            "residual_lagrangian_pu": lag["mean_violation"], "residual_cut": ratio,
            "mae_ratio": mae,
            # a baseline with no residual (a model that closes the balance by construction)
            # leaves nothing to cut: not measurable
            "met": (None if base["mean_violation"] == 0 else
                    ratio >= 10 and all(v <= 1.05 for v in mae.values()))}
    elif base and lag:
        out[base["constraint"]] = {
            "mean_violation_unconstrained": base["mean_violation"],
            "mean_violation_lagrangian": lag["mean_violation"],
            "cut": base["mean_violation"] / lag["mean_violation"] if lag["mean_violation"] else math.inf,
            "mae_ratio": {k: lag["metrics"][k] / base["metrics"][k] for k in base["metrics"]
                          if k.startswith("mae_") and base["metrics"][k]}}
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| task | variant | violation rate | mean violation | max violation | task metric "
            "| s / epoch | epochs |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['task']} | {r['variant']} | {r['violation_rate']:.4f} | "
                     f"{r['mean_violation']:.3g} | {r['max_violation']:.3g} | "
                     f"{primary(r['task'], r['metrics'])} | {r['s_per_epoch']:.3f} | "
                     f"{r['epochs_run']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="datasets/case30.toml")
    ap.add_argument("--target", default="datasets/case118.toml")
    ap.add_argument("--checkpoint-feasibility", type=Path)
    ap.add_argument("--checkpoint-opf", type=Path)
    ap.add_argument("--tasks", nargs="+", default=["feasibility", "opf"], choices=list(SPECS))
    ap.add_argument("--feasibility-spec", type=Path, default=SPECS["feasibility"])
    ap.add_argument("--opf-spec", type=Path, default=SPECS["opf"],
                    help="e.g. constraints/nodal_balance.toml: GridModelNet closes the system "
                         "balance by construction (`balance_pg`), so its residual is 0 unconstrained")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pretrain-epochs", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=64, help="model width when pre-training here")
    ap.add_argument("--layers", type=int, default=4, help="message-passing blocks when pre-training")
    ap.add_argument("--synthetic", action="store_true",
                    help="self-check on tiny synthetic grids (case9 -> case14), seconds not hours")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from gridtune.nn.pretrain import pretrain

    if args.synthetic:
        from tests.nn.synthetic import graphs

        source, target = graphs("case9", 60, seed=0), graphs("case14", 80, seed=1)
        args.labels, args.epochs, args.patience = min(args.labels, 30), min(args.epochs, 4), 4
        args.pretrain_epochs, size = min(args.pretrain_epochs, 3), {"hidden": 16, "layers": 2}
    else:
        source, target = built(args.source), built(args.target)
        size = {"hidden": args.hidden, "layers": args.layers}
    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        ckpt = getattr(args, f"checkpoint_{task}")
        if ckpt is None:
            ckpt = args.out / f"pretrain-{task}"
            if not (ckpt / "config.json").is_file() and not any(ckpt.glob("*.safetensors")):
                print(f"pre-training {task} on the source ...", flush=True)
                pretrain(source, task=task, out_dir=ckpt, epochs=args.pretrain_epochs,
                         seed=args.seed, **size)
        rows += run_task(task, ckpt, target, args)
    result = {"rows": rows, "check": check(rows), "labels": args.labels, "seed": args.seed,
              "strategy": args.strategy, "source": "synthetic" if args.synthetic else args.source,
              "target": "synthetic" if args.synthetic else args.target}
    (args.out / "bench_constraints.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / "bench_constraints.md").write_text(table(rows) + "\n")
    print("\n" + table(rows))
    for name, c in result["check"].items():
        print(f"\n{name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
