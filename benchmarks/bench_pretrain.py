"""Pre-training quality and speed on one dataset, against named baselines.

    python benchmarks/bench_pretrain.py                       # the case118 recipe, must be built
    python benchmarks/bench_pretrain.py --data DIR --epochs 20 --tasks feasibility
    python benchmarks/bench_pretrain.py --samples 6000 --split 0.35,0.15,0.5   # ECE on 3000 test graphs

Trains the feasibility and OPF models with `gridtune.pretrain` (seeded split, 70/15/15 unless `--split`,
early stopping) and prints, each measured in the same run:
    feasibility  AUROC / ECE of the GNN on the test split against the logistic regression on
                 system aggregates (fitted on the same training split)
    opf          system power-balance residual (MW) and nodal mismatch of the GNN against the
                 stored DC-OPF solution, on the same test graphs
    speed        training throughput (graphs / s) and wall time; inference throughput against the
                 solver's recorded wall time per scenario (the speed-up that justifies a predictor)
Targets: AUROC >= 0.97, a clear margin over the baseline (>= 0.05 AUROC), ECE <= 0.03,
OPF power-balance residual below the DC-OPF's.

Optimisation: constant learning rate 1e-3 unless `--lr-schedule cosine`; the model takes
`ModelConfig`'s defaults (branch readout, local stress inputs and DC loadability on, outage-degree
input opt-in; see gridtune.nn.model for what they measured). The DC loadability costs one small
LP per graph (cached by content while training), which the inference throughput includes.

Budget: on case118 one thread trains about 75 graphs/s on a loaded 2-core machine (measured with
other jobs running; more when idle), so ~2100 training graphs take ~30 s an epoch: 100 epochs at
most per task, early stopping usually sooner. The dataset is not built here unless `--build` is
given (labelling case118 takes tens of minutes on 2 cores).
Results go to `--out` (default: bench-pretrain-out/) as JSON, with the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AUROC_TARGET = 0.97
MARGIN_TARGET = 0.05
ECE_TARGET = 0.03


def _dataset(data: str, samples: int | None, build: bool):
    from gridtune.grids.build import default_directory
    from gridtune.grids.dataset import open_dataset
    from gridtune.grids.recipe import recipe_for
    from gridtune.grids.storage import read_manifest

    if Path(data).is_dir():
        return open_dataset(data, samples=samples)
    recipe = recipe_for(data, samples=samples)
    directory = default_directory(recipe)
    have = read_manifest(directory)["samples"] if (directory / "manifest.json").is_file() else 0
    if have < recipe.samples and not build:
        sys.exit(f"bench_pretrain: dataset for `{data}` is not built ({have} of {recipe.samples} "
                 f"scenarios in {directory}); build it with `gridtune data build {data}` or pass --build")
    return open_dataset(data, samples=samples)


def _model_options(args: argparse.Namespace) -> dict:
    options = {"outage_feature": args.outage_feature, "edge_readout": args.edge_readout}
    for name in ("stress_features", "dc_loadability"):
        if getattr(args, name) is not None:  # not given: ModelConfig's default
            options[name] = getattr(args, name)
    return options


def cold_inference(checkpoint_dir: Path, view, task: str, seed: int, *,
                   split: tuple[float, float, float], batch_size: int = 256) -> float:
    """Test-split inference throughput (graphs / s) with every DC loadability LP solved afresh.

    `evaluate_model` times inference after a warm-up batch, and the LP cache
    (`gridtune.nn.loadability`) would then answer from graphs it has already seen: an unseen
    scenario pays its LP, so this timing does too.
    """
    from torch_geometric.loader import DataLoader

    from gridtune.core.trainer import torch_threads
    from gridtune.grids.split import split_indices
    from gridtune.grids.view import task_graphs
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.nn.loadability import uncached

    net, _ = load_checkpoint(checkpoint_dir)
    _, _, te = split_indices(view.statuses, seed, split)
    batches = list(DataLoader(task_graphs([view.graphs[i] for i in te], task), batch_size=batch_size))
    n = sum(int(b.num_graphs) for b in batches)
    with torch_threads(1), torch.no_grad(), uncached():
        net(batches[0])  # warm-up of torch itself; its LPs are solved again below
        start = time.perf_counter()
        for b in batches:
            net(b)
        return n / max(time.perf_counter() - start, 1e-9)


def ece_floor(checkpoint_dir: Path, view, seed: int, *, split: tuple[float, float, float],
              draws: int = 1000) -> float:
    """ECE that a perfectly calibrated model with the same test probabilities would show, on
    average, on a test split of this size: labels drawn from Bernoulli(p), 10-bin ECE, mean over
    `draws`. Below a few hundred graphs, sampling noise alone puts ECE well above zero."""
    import numpy as np

    from gridtune.core.metrics import expected_calibration_error
    from gridtune.core.trainer import make_loader, predict, torch_threads
    from gridtune.grids.split import split_indices
    from gridtune.grids.view import task_graphs
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.nn.tasks import make_task

    net, _ = load_checkpoint(checkpoint_dir)
    _, _, te = split_indices(view.statuses, seed, split)
    with torch_threads(1):
        logits, _ = predict(net, make_loader(task_graphs([view.graphs[i] for i in te], "feasibility"), 256,
                                             shuffle=False), make_task("feasibility"))
    p = torch.sigmoid(logits.double()).numpy()
    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error(p, (rng.random(p.size) < p).astype(float))
                          for _ in range(draws)]))


def _fmt(v, digits: int = 4) -> str:
    return "undefined" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="case118", help="recipe, case name or dataset directory")
    p.add_argument("--samples", type=int)
    p.add_argument("--tasks", default="feasibility,opf")
    p.add_argument("--model", default="gine")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="none", choices=["cosine", "none"],
                   help="none: constant (default); cosine: anneal to 0 over --epochs")
    p.add_argument("--outage-feature", action="store_true", help="ModelConfig.outage_feature")
    p.add_argument("--no-edge-readout", dest="edge_readout", action="store_false",
                   help="ModelConfig.edge_readout=False (on by default)")
    p.add_argument("--stress-features", action=argparse.BooleanOptionalAction, default=None,
                   help="ModelConfig.stress_features (default: ModelConfig's)")
    p.add_argument("--dc-loadability", action=argparse.BooleanOptionalAction, default=None,
                   help="ModelConfig.dc_loadability (default: ModelConfig's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions (default 0.7,0.15,0.15); a larger test share "
                        "measures ECE more precisely (see the ECE floor line)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; see pretrain)")
    p.add_argument("--build", action="store_true", help="build the dataset if it is missing")
    p.add_argument("--out", type=Path, default=Path("bench-pretrain-out"))
    args = p.parse_args(argv)

    import gridtune
    from gridtune.grids.split import parse_split
    from gridtune.grids.view import resolve_data

    split = parse_split(args.split)
    t0 = time.perf_counter()
    ds = _dataset(args.data, args.samples, args.build)
    view = resolve_data(ds)
    counts = {s: int((view.statuses == s).sum()) for s in sorted(set(view.statuses.tolist()))}
    print(f"data       {view.name}: {len(view.graphs)} scenarios {counts}, hash {view.content_hash}, "
          f"loaded in {time.perf_counter() - t0:.1f} s")
    print(f"machine    {os.cpu_count()} CPUs visible, torch threads {args.threads}")
    results: dict = {"data": view.name, "counts": counts, "args": {k: str(v) for k, v in vars(args).items()}}
    checks: list[tuple[str, bool | None]] = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        model = gridtune.ModelConfig(conv=args.model, hidden=args.hidden, layers=args.layers,
                                     **_model_options(args))
        train = gridtune.TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr,
                                     batch_size=args.batch_size, patience=args.patience,
                                     lr_schedule=None if args.lr_schedule == "none" else "cosine")
        m = gridtune.pretrain(view, args.out / task, task=task, model=model, train=train,
                              split=split, progress=True, threads=args.threads).to_dict()
        results[task] = m
        t = m["test"]
        print(f"\n== {task}: {m['split']['train_used']} training graphs, {m['epochs_run']} epochs "
              f"(best {m['best_epoch']}), {m['trainable_parameters']} parameters")
        print(f"training   {m['train_graphs_per_s']:.0f} graphs/s, {m['train_wall_time_s']:.1f} s wall "
              f"({m['wall_time_s']:.1f} s with data and evaluation)")
        t["inference_cold_graphs_per_s"] = cold_inference(args.out / task, view, task, args.seed, split=split)
        if "speedup_vs_solver" in t:
            t["speedup_vs_solver_cold"] = t["solver_s_per_scenario"] * t["inference_cold_graphs_per_s"]
            print(f"inference  {t['inference_cold_graphs_per_s']:.0f} graphs/s on unseen scenarios (LPs solved; "
                  f"{t['inference_graphs_per_s']:.0f} with them cached) against the solver's "
                  f"{t['solver_s_per_scenario']:.3f} s/scenario: speed-up {t['speedup_vs_solver_cold']:.0f}x")
        else:
            print(f"inference  {t['inference_cold_graphs_per_s']:.0f} graphs/s on unseen scenarios "
                  "(no solver times recorded)")
        mo, ba = t["model"], t["baseline"]
        if task == "feasibility":
            auroc, base = mo.get("auroc"), ba.get("auroc")
            print(f"AUROC      GNN {_fmt(auroc)}  vs  aggregate logistic regression {_fmt(base)}"
                  + (f"  (margin {auroc - base:+.4f})" if auroc is not None and base is not None else ""))
            t["ece_floor"] = ece_floor(args.out / task, view, args.seed, split=split)
            print(f"ECE        GNN {_fmt(mo.get('ece'))}  vs  baseline {_fmt(ba.get('ece'))};  "
                  f"Brier {_fmt(mo.get('brier'))} vs {_fmt(ba.get('brier'))}")
            print(f"           a perfectly calibrated model with these probabilities would show ECE "
                  f"{t['ece_floor']:.4f} on {t['n_test']} test graphs (sampling noise alone)")
            checks += [(f"AUROC >= {AUROC_TARGET}", None if auroc is None else auroc >= AUROC_TARGET),
                       (f"AUROC margin over baseline >= {MARGIN_TARGET}",
                        None if auroc is None or base is None else auroc - base >= MARGIN_TARGET),
                       (f"ECE <= {ECE_TARGET}", None if mo.get("ece") is None else mo["ece"] <= ECE_TARGET)]
        elif task == "opf":
            for key in ("power_balance_mw", "nodal_mismatch_mw", "mae_va_degree", "mae_pg_mw", "optimality_gap"):
                a, b = mo.get(key), ba.get(key)
                ratio = f"  ratio GNN/DC {a / b:.3g}" if a is not None and b not in (None, 0) else ""
                print(f"{key:<18} GNN {_fmt(a)}  vs  DC-OPF {_fmt(b)}{ratio}")
            if mo.get("balance_completion"):
                print(f"{'':<18} (GNN balance closed by its output layer; the head alone left "
                      f"{_fmt(mo.get('power_balance_mw_before_completion'))} MW)")
            for key in ("mae_vm_pu", "mae_qg_mvar"):
                print(f"{key:<18} GNN {_fmt(mo.get(key))}  (DC-OPF has none)")
            pb, pb_dc = mo.get("power_balance_mw"), ba.get("power_balance_mw")
            checks.append(("OPF power balance below DC-OPF's",
                           None if pb is None or pb_dc is None else pb < pb_dc))
    print("\n== targets")
    for name, ok in checks:
        print(f"{'PASS' if ok else ('n/a ' if ok is None else 'FAIL')}  {name}")
    args.out.mkdir(parents=True, exist_ok=True)
    from gridtune.evaluation.evaluate import to_json

    (args.out / "bench_pretrain.json").write_text(json.dumps(to_json(results), indent=2) + "\n")
    print(f"\nresults    {args.out / 'bench_pretrain.json'}  (total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
