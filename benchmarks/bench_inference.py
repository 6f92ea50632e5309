"""Inference speed of a feasibility model on unseen scenarios against the AC-OPF solve it replaces.

    python benchmarks/bench_inference.py                          # case118, untrained default model
    python benchmarks/bench_inference.py --checkpoint runs/feas   # a trained model (same speed)
    python benchmarks/bench_inference.py --sizes 64x4,32x2,16x2   # the GNN alone at other sizes

Held-out scenarios: the test split of the dataset (seeded, stratified, as `gridtune evaluate`
splits it), batches of `--batch-size` (256, as `evaluate` does), one torch thread, every DC
loadability LP solved afresh (`gridtune.nn.loadability.uncached`), one warm-up batch, best of
`--repeats` passes. Printed side by side, each in graphs / s and as a speed-up over the solver's
recorded mean time per test scenario (`solve_time_s`):

    old path      every graph's LP solved from scratch by the reference LP (`reference_lp`)
    new path      per-topology LPs re-solved warm (`gridtune.nn.basis_lp`), the topologies set up
                  on the training split first, as a deployed model's would be (its test loads
                  are still solved, not looked up)
    new, cold     the same with every topology forgotten before each pass: each pays its set-up
                  and its first, cold solve inside the timing
    LP answered   the LPs answered from the result cache: the model and its other inputs alone,
                  what any LP method could at most reach
    cut bounds    approximate, no solve: lam from the dual cuts the training split's solves
                  found (`cut_bounds`; exact where the test scenario's bottleneck was among
                  them), timed and compared with the exact lam before any test load is solved
and, for the model's own inputs: the LP features alone (old, new), the DC power flow and stress
columns, and the GNN (encoder, pools, head) as the rest.

End to end, default against fast (`--fast CHECKPOINT [...]`, trained with `--model-option
preset=fast` or by `gridtune distill`; without it an untrained `fast` preset is timed): per batch of
`--batch-size` test graphs as the dataset holds them (PyG `Data`), the timing covers joining them
into a batch (PyG's `Batch.from_data_list` for the default model, as `gridtune evaluate` does;
`gridtune.nn.batching.collate_inputs` for the fast one, and PyG's too, for comparison), every
model input (DC power flow, stress columns, the LP when the model has one: solved, not cached),
normalisation, GNN, head and calibration. Not inside: reading the dataset and building each
scenario's graph from its stored row (`GraphBuilder`), timed on its own and printed beside it. Then
the test AUROC of each fast checkpoint (and of `--checkpoint`) with a 95% percentile bootstrap
interval over the test graphs, and their mean ± std over the checkpoints given (seeds).

    python benchmarks/bench_inference.py --checkpoint runs/feas-s0 --fast runs/fast-s0 runs/fast-s1 \
        runs/fast-s2 --clock cpu --end-to-end-only

`--held-out-from N` scores AUROC on the scenarios of `--data` from index N on instead: with a
dataset built past the part the checkpoints were trained on (`gridtune data build case118 --samples
6000 --out DIR`, then `gridtune pretrain --data DIR --samples 3000 ...`: scenario i depends only on
the recipe and i), thousands of test graphs none of them saw, where a 15% test split holds about
430 (too few to tell 0.97 from 0.96). Refused unless
every checkpoint was trained on exactly the first N scenarios (data hash). `--batch-sizes 256,4096`
times the fast model end to end on one batch of each size of fresh recipe draws.

With `--sizes`, untrained models of those `hidden x layers` (head width = hidden) are timed the
same way with the LP answered from the cache: the GNN's own cost at each size.

Timings on a shared machine move with its load; the ratio new / old is taken within one run, and
`--clock cpu` times the process's own CPU seconds (single-threaded work: the wall time it would
take on an idle core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


CLOCK = [time.perf_counter]


def _best(fn, batches, repeats: int, before=None) -> float:
    """Best graphs / s over `repeats` passes of fn over all batches (after one warm-up batch)."""
    n = sum(len(b) if isinstance(b, list) else int(b.num_graphs) for b in batches)
    best = 0.0
    for _ in range(repeats):
        if before is not None:
            before()
        fn(batches[0])
        if before is not None:
            before()
        start = CLOCK[0]()
        for b in batches:
            fn(b)
        best = max(best, n / max(CLOCK[0]() - start, 1e-9))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="case118", help="case name, recipe or dataset directory (must be built)")
    p.add_argument("--checkpoint", type=Path, help="feasibility checkpoint (default: an untrained default model)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="split seed (as `gridtune evaluate --seed`)")
    p.add_argument("--sizes", default="", help="extra untrained model sizes, e.g. 64x4,32x2,16x2")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time (as `gridtune evaluate` times), or this process's CPU time: on a machine "
                        "that other jobs load, what the same work takes on a core of its own (default: wall)")
    p.add_argument("--fast", type=Path, nargs="+", default=[],
                   help="fast-model checkpoints (e.g. one per seed): timed end to end beside the default model "
                        "(the first), AUROC of each (default: an untrained `fast` preset, timed only)")
    p.add_argument("--end-to-end-only", action="store_true",
                   help="skip the LP-method comparison (old / new / cold / cut bounds) and the parts")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for AUROC intervals (default: 2000)")
    p.add_argument("--held-out-from", type=int, metavar="N",
                   help="score AUROC on the scenarios of --data from index N on, which checkpoints trained on "
                        "its first N never saw (an extension: `gridtune data build RECIPE --samples 2N`), "
                        "instead of each checkpoint's own test split")
    p.add_argument("--batch-sizes", default="",
                   help="with --end-to-end-only: also time the fast model end to end on batches of these sizes "
                        "(e.g. 256,1024,4096), each filled with fresh draws of the dataset's recipe")
    args = p.parse_args(argv)
    CLOCK[0] = time.perf_counter if args.clock == "wall" else time.process_time

    from torch_geometric.loader import DataLoader

    from gridtune.grids.split import split_indices
    from gridtune.grids.view import resolve_data, task_graphs
    from gridtune.nn import basis_lp
    from gridtune.nn.loadability import cut_bounds, loadability_features, reference_lp, uncached
    from gridtune.nn.model import ModelConfig, _batch_vector, _dc_flow, build_model
    from gridtune.nn.normalizer import Normalizer
    from gridtune.nn.stress import stress_features

    torch.set_num_threads(1)
    from gridtune.grids.dataset import open_dataset

    dataset = open_dataset(args.data)
    view = resolve_data(dataset)
    args.held_out_split = (None if args.held_out_from is None else  # checked before any timing
                           held_out_test(args.held_out_from, dataset, view, args.fast, args.checkpoint))
    tr, _, te = split_indices(view.statuses, args.seed)
    train = task_graphs([view.graphs[i] for i in tr], "feasibility")
    test = task_graphs([view.graphs[i] for i in te], "feasibility")
    batches = list(DataLoader(test, batch_size=args.batch_size))
    solver_s = None
    if view.solve_time_s is not None:
        times = view.solve_time_s[te]
        times = times[np.isfinite(times) & (times > 0)]
        solver_s = float(times.mean()) if times.size else None
    if args.checkpoint is not None:
        from gridtune.nn.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        model = build_model(ModelConfig(), "feasibility", Normalizer().fit(train))
    model.eval()
    cfg = model.config
    print(f"data       {view.name}: {len(test)} test scenarios in {len(batches)} batches of <= {args.batch_size}; "
          f"1 torch thread, best of {args.repeats}, {args.clock} clock")
    print(f"model      {args.checkpoint or 'untrained'}: {cfg.conv}, hidden {cfg.hidden}, layers {cfg.layers}, "
          f"dc_loadability {cfg.dc_loadability}, stress_features {cfg.stress_features}")
    print(f"solver     {'unknown' if solver_s is None else f'{solver_s:.4f} s / scenario'} "
          "(recorded AC-OPF wall time, mean over the test split)")

    def speedup(rate: float) -> str:
        return "" if solver_s is None else f"{solver_s * rate:9.0f}x"

    def row(name: str, rate: float, note: str = "") -> None:
        print(f"  {name:<28} {rate:9.0f} graphs/s {speedup(rate)}  {note}")

    results: dict[str, float] = {}
    with torch.no_grad():
        # deployed state: every topology of the training split set up (its loads are not reused)
        with uncached():
            for b in DataLoader(train, batch_size=args.batch_size):
                loadability_features(b.x, b.edge_index, b.edge_attr, _batch_vector(b))
        print(f"topologies {basis_lp.stats()['topologies']} set up on the training split")

        def lp_old(b):
            with uncached(), reference_lp():
                return loadability_features(b.x, b.edge_index, b.edge_attr, _batch_vector(b))

        def lp_new(b):
            with uncached():
                return loadability_features(b.x, b.edge_index, b.edge_attr, _batch_vector(b))

        def full_old(b):
            with uncached(), reference_lp():
                return model(b)

        def full_new(b):
            with uncached():
                return model(b)

        def inputs(b):
            index = _batch_vector(b)
            _, flow, _ = _dc_flow(b.x, b.edge_index, b.edge_attr, index)
            return stress_features(b.x, b.edge_index, b.edge_attr, b.nominal_load_pu, index, flow)

        if args.end_to_end_only:
            end_to_end(args, model, test, te, dataset, view, solver_s, row)
            return 0

        def lam_of(b):  # lam per graph, from dc_overload = 10 (1 / lam - 1)
            overload = lp_new(b)[0][b.ptr[:-1], 0].double()
            return (1.0 / (1.0 + overload / 10.0)).numpy()

        # first, before any test load is solved (its cuts would answer itself): the approximation
        with cut_bounds():
            lam_cut = np.concatenate([lam_of(b) for b in batches])
            results["cut"] = _best(full_new, batches, args.repeats)
            results["lp_cut"] = _best(lp_new, batches, args.repeats)
        lam_exact = np.concatenate([lam_of(b) for b in batches])
        results["old"] = _best(full_old, batches, args.repeats)
        results["new"] = _best(full_new, batches, args.repeats)
        results["new_cold"] = _best(full_new, batches, args.repeats, before=basis_lp.clear)
        for b in batches:  # fill the result cache: the LP is then a look-up
            model(b)
        results["lp_cached"] = _best(model, batches, args.repeats)
        results["lp_old"] = _best(lp_old, batches, args.repeats)
        results["lp_new"] = _best(lp_new, batches, args.repeats)
        results["inputs"] = _best(inputs, batches, args.repeats)

    print("\nfull model on unseen scenarios (LP solved)")
    row("old path (reference LP)", results["old"])
    row("new path (warm topologies)", results["new"], f"ratio new / old {results['new'] / results['old']:.2f}")
    row("new path, cold topologies", results["new_cold"],
        f"ratio new / old {results['new_cold'] / results['old']:.2f}")
    row("LP answered from cache", results["lp_cached"], "(the bound for any LP method)")
    rel = np.abs(lam_cut - lam_exact) / np.maximum(lam_exact, 1e-12)
    row("approximate: cut bounds", results["cut"],
        f"lam exact (1e-9) on {np.mean(rel <= 1e-9):.1%} of scenarios, max error {rel.max():.2%}")
    print("\nparts (per pass over the test split; graphs/s of that part alone)")
    row("LP features, old", results["lp_old"])
    row("LP features, new", results["lp_new"], f"ratio {results['lp_new'] / results['lp_old']:.2f}")
    row("LP features, cut bounds", results["lp_cut"], "(approximate)")
    row("DC flow + stress inputs", results["inputs"])
    per = 1.0 / results["lp_cached"] - 1.0 / results["inputs"]
    if per > 0:
        row("GNN + normalise + look-ups", 1.0 / per, "(LP-answered model minus the inputs above)")
    if solver_s is not None:
        need = 1000.0 / solver_s
        print(f"\n1000x the solver needs {need:.0f} graphs/s: {1e3 * args.batch_size / need:.1f} ms per batch of "
              f"{args.batch_size}; this model with cached LP answers takes "
              f"{1e3 * args.batch_size / results['lp_cached']:.1f} ms")

    with torch.no_grad():
        end_to_end(args, model, test, te, dataset, view, solver_s, row)

    sizes = [s for s in args.sizes.split(",") if s.strip()]
    if sizes:
        print("\nuntrained models by size, LP answered from cache (GNN cost), same inputs")
        for s in sizes:
            hidden, layers = (int(v) for v in s.lower().split("x"))
            m = build_model(ModelConfig(hidden=hidden, layers=layers, head_hidden=hidden), "feasibility",
                            model.normalizer).eval()
            with torch.no_grad():
                rate = _best(m, batches, args.repeats)
            row(f"hidden {hidden}, layers {layers}", rate)
    return 0


def auroc_interval(probs: np.ndarray, labels: np.ndarray, boot: int, seed: int = 0) -> tuple[float, float, float]:
    """AUROC and its 95% percentile bootstrap interval over graphs (Efron and Tibshirani 1993)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(boot):
        i = rng.integers(0, labels.size, labels.size)
        if 0 < labels[i].sum() < labels.size:
            values.append(roc_auc_score(labels[i], probs[i]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(roc_auc_score(labels, probs)), float(lo), float(hi)


def end_to_end(args, model, test, te, dataset, view, solver_s, row) -> None:
    """Default against fast, from the dataset's graphs to probabilities; AUROC of each fast checkpoint."""
    from torch_geometric.data import Batch

    from gridtune.grids import storage
    from gridtune.grids.features import GraphBuilder
    from gridtune.nn.batching import collate_inputs
    from gridtune.nn.checkpoint import load_checkpoint
    from gridtune.nn.loadability import uncached
    from gridtune.nn.model import _batch_vector, _dc_flows, build_model, model_preset
    from gridtune.nn.stress import stress_features

    if args.fast:
        loaded = [load_checkpoint(c) for c in args.fast]
        fast_models = [m.eval() for m, _ in loaded]
        fast_splits = [(meta.get("split_seed", args.seed), meta.get("split_fractions")) for _, meta in loaded]
    else:
        torch.manual_seed(args.seed)
        fast_models = [build_model(model_preset("fast"), "feasibility", model.normalizer).eval()]
        fast_splits = [(args.seed, None)]
    fast = fast_models[0]
    chunks = [test[i:i + args.batch_size] for i in range(0, len(test), args.batch_size)]

    def default_e2e(chunk):
        with uncached():
            return model(Batch.from_data_list(chunk))

    def fast_e2e(chunk):
        return fast(collate_inputs(chunk))

    def fast_pyg(chunk):
        return fast(Batch.from_data_list(chunk))

    def collate_pyg(chunk):
        return Batch.from_data_list(chunk)

    batches = [collate_inputs(c) for c in chunks]

    def fast_inputs(b):
        index = _batch_vector(b)
        _, flow, _, q_flow = _dc_flows(b.x, b.edge_index, b.edge_attr, index, reactive=True)
        return stress_features(b.x, b.edge_index, b.edge_attr, b.nominal_load_pu, index, flow, q_flow)

    rows = dataset.frame.to_dict("records")
    scenarios = [storage.row_to_scenario(rows[i]) for i in te]
    start = CLOCK[0]()
    build = GraphBuilder(dataset.grid)  # as a dataset builds its graphs: topology parts shared
    for sc in scenarios:
        build(sc, None)
    graph_rate = len(scenarios) / max(CLOCK[0]() - start, 1e-9)

    with torch.no_grad():
        r = {"default": _best(default_e2e, chunks, args.repeats), "fast": _best(fast_e2e, chunks, args.repeats),
             "fast_pyg": _best(fast_pyg, chunks, args.repeats),
             "collate_pyg": _best(collate_pyg, chunks, args.repeats),
             "collate": _best(collate_inputs, chunks, args.repeats),
             "model": _best(fast, batches, args.repeats)}
        if fast.config.dc_flow or fast.config.stress_features:
            r["inputs"] = _best(fast_inputs, batches, args.repeats)
    cfg = fast.config
    print(f"\nend to end, {len(test)} test graphs as the dataset holds them -> probabilities "
          f"(batches of <= {args.batch_size}; default: every LP solved, warm topologies)")
    row("default model", r["default"], "PyG batching + inputs (LP solved) + GNN")
    row("fast model", r["fast"], f"collate_inputs + inputs + GNN; {cfg.hidden} x {cfg.layers}, "
        f"dc_loadability {cfg.dc_loadability}, dc_flow {cfg.dc_flow}, stress {cfg.stress_features}, "
        f"edge_readout {cfg.edge_readout}; ratio fast / default "
        f"{r['fast'] / r['default']:.0f}")
    row("fast model, PyG batching", r["fast_pyg"])
    print("  parts of the fast path (graphs/s of that part alone)")
    row("  batching, collate_inputs", r["collate"])
    row("  batching, PyG", r["collate_pyg"])
    if cfg.dc_flow or cfg.stress_features:
        row("  DC flow + stress inputs", r["inputs"])
    row("  fast model on a batch", r["model"], "(inputs, normalise, GNN, head)")
    both = 1.0 / (1.0 / r["fast"] + 1.0 / graph_rate)
    row("graph from a stored scenario", graph_rate, "(GraphBuilder, one scenario at a time; not inside the above)")
    row("fast model incl. to_graph", both, "(from scenario rows)")
    sizes = [int(v) for v in args.batch_sizes.split(",") if v.strip()]
    if sizes:
        batch_sweep(sizes, fast, dataset, solver_s, args, row)
    if solver_s is not None:
        print(f"  1000x the solver ({solver_s:.4f} s / scenario) needs {1000.0 / solver_s:.0f} graphs/s: "
              f"fast path {'MEETS' if r['fast'] * solver_s >= 1000 else 'MISSES'} it "
              f"({r['fast'] * solver_s:.0f}x; {both * solver_s:.0f}x including to_graph)")

    from gridtune.grids.split import split_indices

    def split_test(seed, fractions):
        _, _, idx = split_indices(view.statuses, seed, *(() if fractions is None else (tuple(fractions),)))
        graphs = [g for g in (view.graphs[i] for i in idx) if np.isfinite(float(g.y_infeasible))]
        return graphs, np.array([float(g.y_infeasible) for g in graphs])

    where = "each model's own test split (its split seed)"
    if args.held_out_split is not None:
        split_test = args.held_out_split
        where = f"the scenarios from index {args.held_out_from} on (held out from every model)"
    print(f"\ntest AUROC on {where}, 95% bootstrap over test graphs ({args.boot} resamples)")
    named = ([(str(args.checkpoint), model, (args.seed, None))] if args.checkpoint is not None else []) + \
        [(str(c), m, sp) for c, m, sp in zip(args.fast or ["untrained fast"], fast_models, fast_splits)]
    fast_values = []
    with torch.no_grad():
        for name, m, (seed, fractions) in named:
            graphs, labels = split_test(seed, fractions)
            parts = [graphs[i:i + args.batch_size] for i in range(0, len(graphs), args.batch_size)]
            with uncached():
                probs = torch.cat([torch.sigmoid(m(collate_inputs(c)).double()) for c in parts]).numpy()
            auc, lo, hi = auroc_interval(probs, labels, args.boot)
            if m is not model:
                fast_values.append(auc)
            which = "held out" if args.held_out_split is not None else f"split seed {seed}"
            print(f"  {name:<40} {which}: {labels.size} test graphs ({int(labels.sum())} infeasible), "
                  f"AUROC {auc:.4f} [{lo:.4f}, {hi:.4f}]")
    if len(fast_values) > 1:
        print(f"  fast checkpoints: mean {np.mean(fast_values):.4f} ± {np.std(fast_values, ddof=1):.4f} "
              f"(std over {len(fast_values)}); min {min(fast_values):.4f}")


def _refuse(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def held_out_test(first: int, dataset, view, fast: list[Path], checkpoint: Path | None):
    """A `split_test` stand-in: the scenarios of `dataset` from index `first` on, after checking
    that every checkpoint was trained on the dataset's first `first` scenarios (its data hash)."""
    from gridtune.grids.dataset import open_dataset
    from gridtune.nn.checkpoint import read_config

    if not 0 < first < len(view.graphs):
        _refuse(f"--held-out-from {first}: must lie inside the {len(view.graphs)} scenarios of --data")
    trained_on = open_dataset(dataset.directory, samples=first).content_hash
    for c in ([checkpoint] if checkpoint is not None else []) + list(fast):
        got = read_config(c).get("data_hash")
        if got != trained_on:
            _refuse(f"--held-out-from {first}: checkpoint `{c}` was trained on data {got}, not on the first "
                    f"{first} scenarios of --data ({trained_on}); its held-out score would be wrong")
    graphs = [g for g in view.graphs[first:] if np.isfinite(float(g.y_infeasible))]
    labels = np.array([float(g.y_infeasible) for g in graphs])

    def split_test(seed, fractions):
        return graphs, labels
    return split_test


def batch_sweep(sizes: list[int], fast, dataset, solver_s, args, row) -> None:
    """The fast model end to end on one batch of each size, from scenarios to probabilities.

    Each batch holds `size` fresh draws of the dataset's recipe (`GridDataset.unlabeled_scenarios`,
    no OPF solve, seeds of their own): unseen loads on the recipe's topologies, no graph repeated.
    Timed per batch: building the graphs (`GraphBuilder`, as the dataset builds them), batching
    (`collate_inputs`), every input, GNN and head; best of `--repeats` after one warm-up."""
    from gridtune.grids.features import GraphBuilder
    from gridtune.nn.batching import collate_inputs

    print("\nbatch size: the fast model on one batch of fresh recipe draws, from scenario to probability")
    for size in sizes:
        scenarios = dataset.unlabeled_scenarios(size, args.seed + 1)
        build = GraphBuilder(dataset.grid)

        def graphs_to_probs(chunk):
            return fast(collate_inputs(chunk))

        def scenarios_to_probs(chunk, build=build):
            return fast(collate_inputs([build(sc, None) for sc in chunk]))

        with torch.no_grad():
            model_rate = _best(graphs_to_probs, [[build(sc, None) for sc in scenarios]], args.repeats)
            both = _best(scenarios_to_probs, [scenarios], args.repeats)
        row(f"  batch of {size}", both, f"incl. graph building; from graphs {model_rate:.0f} graphs/s"
            + (f" ({model_rate * solver_s:.0f}x)" if solver_s is not None else ""))


if __name__ == "__main__":
    sys.exit(main())
