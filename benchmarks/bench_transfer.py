"""Transfer benchmark: case30 -> case118 feasibility, learning curves per strategy.

Target (issue 4): with 100 target labels, the best strategy reaches at least the AUROC that
scratch reaches with 1,000 target labels. The script prints the learning curve (mean and std of
test AUROC over seeds) for each strategy, the transfer verdict (gain over scratch with a bootstrap
interval) at each label budget, and the ratio

    best strategy AUROC @ 100 labels  /  scratch AUROC @ 1000 labels   (baseline: scratch)

Strategies are registry names; `NAME+ssl` adds masked-feature pre-adaptation on the unlabelled
target scenarios first (two-stage). Every cell (labels, seed, strategy) is one `gridtune.finetune.api.finetune` run on the same
target split and label draw for that seed; results are appended to `OUT/results.jsonl` as they
finish, so an interrupted run resumes where it stopped.

Source: the shipped recipe `case30_rerated` by default, case30 with its branches re-rated the way
the case118 recipe re-rates case118, so that both grids meet their feasibility boundary through the
same mechanism (thermal limits; see the recipe's header for the measured DC-loadability shares).
With stock case30 (`--source case30`) the source learns an AC threshold that does
not hold on case118 and every strategy transfers negatively (README, "Measured").

It never builds the large datasets: pass built dataset directories (or recipes whose cache
directory already holds the data); a missing dataset is an error telling how to build it.

    gridtune data build case30_rerated --workers 2      # once
    python benchmarks/bench_transfer.py --target case118 \
        --checkpoint runs/case30-rerated-feas --out runs/bench-transfer --seeds 0 1 2 --workers 2

    python benchmarks/bench_transfer.py --synthetic --out /tmp/bench-check   # tiny self-check
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = (25, 50, 100, 250, 500, 1000)
STRATEGIES = ("scratch", "linear-probe", "full", "adapter", "dann")


def built_dataset(recipe_or_dir: str) -> Path:
    """The directory of an already built dataset; never builds one."""
    from gridtune.errors import DataError
    from gridtune.grids.build import default_directory
    from gridtune.grids.recipe import recipe_for

    p = Path(recipe_or_dir)
    if p.is_dir():
        return p
    recipe = recipe_for(recipe_or_dir)
    d = default_directory(recipe)
    manifest = d / "manifest.json"
    if not manifest.is_file() or (d / "parts").is_dir():
        raise DataError(f"dataset for `{recipe_or_dir}` is not built (expected it in `{d}`); build "
                        f"it first with `gridtune data build {recipe_or_dir}`")
    return d


@functools.lru_cache(maxsize=2)
def _target(spec: str) -> Any:
    """The target data, loaded once per process: a GridDataset, or synthetic graphs."""
    if spec.startswith("synthetic:"):
        from tests.nn.synthetic import graphs  # the test suite's rule-labelled grids

        _, name, n = spec.split(":")
        return graphs(name, int(n), seed=1)
    from gridtune.grids.dataset import open_dataset

    return open_dataset(spec, progress=False)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One (labels, seed, strategy) run; failures come back as records, not exceptions."""
    from gridtune.errors import GridtuneError
    from gridtune.finetune.api import finetune
    from gridtune.finetune.trainer import TrainConfig

    start = time.perf_counter()
    name, _, stage = cell["strategy"].partition("+")  # `full+ssl`: two-stage adaptation
    pre = cell["pre_adapt_epochs"] if stage == "ssl" else 0
    try:
        data = _target(cell["target"])
        needs_unl = (name in ("dann", "coral", "mmd", "self-training") or pre > 0
                     or cell["normalizer"] == "target")  # target statistics use the unlabelled draw
        r = finetune(cell["checkpoint"], data, labels=cell["labels"], strategy=name,
                     seed=cell["seed"], unlabeled=cell["unlabeled"] if needs_unl else 0,
                     pre_adapt_epochs=pre, out_dir=Path(cell["out"]), with_scratch=False, save=False,
                     normalizer=cell["normalizer"],
                     train_config=TrainConfig(epochs=cell["epochs"], patience=cell["patience"],
                                              lr=cell["lr"]))
        return {**_key(cell), "auroc": r["metrics"].get("auroc"), "metrics": r["metrics"],
                "trainable_params": r["trainable_params"], "epochs_run": r["epochs_run"],
                "wall_time_s": time.perf_counter() - start}
    except GridtuneError as exc:
        return {**_key(cell), "error": str(exc), "wall_time_s": time.perf_counter() - start}


def _key(cell: dict[str, Any]) -> dict[str, Any]:
    return {"labels": cell["labels"], "seed": cell["seed"], "strategy": cell["strategy"]}


def _done(path: Path) -> dict[tuple, dict[str, Any]]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["labels"], r["seed"], r["strategy"]): r for r in rows if "error" not in r}


def summarise(rows: list[dict[str, Any]], labels: list[int], strategies: list[str],
              probe: int = 100, reference: int = 1000) -> dict[str, Any]:
    """Learning curves, verdicts and the target check from result rows."""
    from gridtune.finetune.verdict import transfer_verdict

    def scores(strategy: str, n: int) -> dict[int, float]:
        return {r["seed"]: r["auroc"] for r in rows if r["strategy"] == strategy and r["labels"] == n
                and r.get("auroc") is not None}

    curve = {s: {n: scores(s, n) for n in labels} for s in strategies}
    verdicts: dict[str, dict[int, Any]] = {}
    for s in strategies:
        if s == "scratch":
            continue
        verdicts[s] = {}
        for n in labels:
            a, b = curve[s][n], curve["scratch"][n]
            seeds = sorted(set(a) & set(b))
            if seeds:
                verdicts[s][n] = transfer_verdict([a[k] for k in seeds], [b[k] for k in seeds])
    check: dict[str, Any] = {}
    ref = curve.get("scratch", {}).get(reference, {})
    cands = {s: float(np.mean(list(curve[s][probe].values())))
             for s in strategies if s != "scratch" and curve[s].get(probe)}
    if ref and cands:
        best = max(cands, key=cands.get)
        ref_mean = float(np.mean(list(ref.values())))
        check = {"best_strategy": best, f"best_auroc_at_{probe}": cands[best],
                 f"scratch_auroc_at_{reference}": ref_mean, "ratio": cands[best] / ref_mean,
                 "target_met": cands[best] >= ref_mean}
    return {"curve": curve, "verdicts": verdicts, "check": check}


def print_summary(summary: dict[str, Any], labels: list[int], strategies: list[str],
                  probe: int, reference: int) -> None:
    curve, verdicts = summary["curve"], summary["verdicts"]
    print("\ntest AUROC, mean +- std over seeds (n seeds)")
    print(f"{'strategy':<14}" + "".join(f"{n:>16}" for n in labels))
    for s in strategies:
        cells = []
        for n in labels:
            v = list(curve[s][n].values())
            cells.append(f"{np.mean(v):.3f}+-{np.std(v):.3f}({len(v)})" if v else "-")
        print(f"{s:<14}" + "".join(f"{c:>16}" for c in cells))
    print("\ntransfer gain over scratch [95% bootstrap CI]; NEG = negative transfer")
    for s, by_n in verdicts.items():
        cells = []
        for n in labels:
            v = by_n.get(n)
            if v is None:
                cells.append("-")
            elif v.n_seeds < 2:
                cells.append(f"{v.gain_mean:+.3f}")
            else:
                flag = " NEG" if v.negative_transfer else (" POS" if v.positive_transfer else "")
                cells.append(f"{v.gain_mean:+.3f}[{v.ci_low:+.2f},{v.ci_high:+.2f}]{flag}")
        print(f"{s:<14}" + "  ".join(f"{n}: {c}" for n, c in zip(labels, cells, strict=True)))
    c = summary["check"]
    if c:
        print(f"\nbest strategy at {probe} labels: {c['best_strategy']} AUROC "
              f"{c[f'best_auroc_at_{probe}']:.4f}; scratch at {reference} labels: "
              f"{c[f'scratch_auroc_at_{reference}']:.4f}")
        print(f"ratio (best@{probe} / scratch@{reference}): {c['ratio']:.4f}  -> target "
              f"{'MET' if c['target_met'] else 'NOT met'}")
    else:
        print(f"\ntarget check needs scratch at {reference} labels and a strategy at {probe}: "
              "not both available")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="case30_rerated",
                    help="source recipe or dataset directory (default: case30 re-rated like case118)")
    ap.add_argument("--target", default="case118", help="target recipe or dataset directory")
    ap.add_argument("--checkpoint", type=Path, help="pre-trained source checkpoint (trained here if missing)")
    ap.add_argument("--out", type=Path, required=True, help="results directory (resumable)")
    ap.add_argument("--labels", type=int, nargs="+", default=list(LABELS))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--unlabeled", type=int, default=1000, help="unlabelled target scenarios for dann")
    ap.add_argument("--pre-adapt-epochs", type=int, default=20,
                    help="masked-reconstruction epochs for `NAME+ssl` strategies (two-stage)")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--normalizer", default="source",
                    help="input statistics of transferred models: the checkpoint's (source) or "
                         "refitted on target labelled + unlabelled graphs (target)")
    ap.add_argument("--pretrain-epochs", type=int, default=200)
    ap.add_argument("--probe", type=int, default=100, help="label budget of the target check")
    ap.add_argument("--reference", type=int, default=1000, help="scratch label budget it must reach")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="local", help="local or ray")
    ap.add_argument("--synthetic", action="store_true",
                    help="self-check on tiny synthetic grids (case9 -> case14), seconds not hours")
    args = ap.parse_args(argv)

    from gridtune.finetune.registry import strategy_class
    from gridtune.nn.pretrain import pretrain
    from gridtune.parallel import run_tasks

    for s in args.strategies:
        name, _, stage = s.partition("+")
        strategy_class(name)
        if stage not in ("", "ssl"):
            raise SystemExit(f"unknown stage `+{stage}` in `{s}`; valid: `NAME` or `NAME+ssl`")
    if "scratch" not in args.strategies:
        args.strategies.insert(0, "scratch")
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or args.out / "source-checkpoint"
    if args.synthetic:
        from tests.nn.synthetic import graphs

        target = "synthetic:case14:400"
        source_data: Any = graphs("case9", 300, seed=0)
        args.labels = [n for n in args.labels if n <= 100] or [25, 50, 100]
        args.probe, args.reference = min(args.labels), max(args.labels)
        args.unlabeled = min(args.unlabeled, 64)
        pretrain_kw = {"hidden": 32, "layers": 3}
    else:
        target = str(built_dataset(args.target))
        source_data = None  # only needed (and checked) when the checkpoint must be trained
        pretrain_kw = {}
    if not (Path(checkpoint) / "config.json").is_file():
        if source_data is None:
            source_data = str(built_dataset(args.source))
        print(f"pre-training the source model into {checkpoint} ...", flush=True)
        m = pretrain(source_data, task="feasibility", out_dir=checkpoint, epochs=args.pretrain_epochs,
                     **pretrain_kw)
        print(f"source test AUROC {m['test']['model'].get('auroc')}", flush=True)

    results = args.out / "results.jsonl"
    done = _done(results)
    cells = [{"labels": n, "seed": s, "strategy": st, "target": target, "checkpoint": str(checkpoint),
              "unlabeled": args.unlabeled, "epochs": args.epochs,
              "pre_adapt_epochs": args.pre_adapt_epochs, "patience": args.patience,
              "lr": args.lr, "normalizer": args.normalizer, "out": str(args.out / "cells" / f"{st}-{n}-{s}")}
             for n in args.labels for s in args.seeds for st in args.strategies
             if (n, s, st) not in done]
    print(f"{len(done)} cells done, {len(cells)} to run", flush=True)
    start = time.perf_counter()
    with results.open("a") as fh:
        for _, row in run_tasks(run_cell, cells, workers=args.workers, backend=args.backend):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            msg = row.get("error") or f"AUROC {row['auroc']:.4f} ({row['trainable_params']} params, " \
                                       f"{row['epochs_run']} epochs)"
            print(f"  {row['strategy']:<13} labels {row['labels']:>5} seed {row['seed']}: {msg} "
                  f"[{row['wall_time_s']:.1f} s]", flush=True)
            if "error" not in row:
                done[(row["labels"], row["seed"], row["strategy"])] = row
    print(f"ran {len(cells)} cells in {time.perf_counter() - start:.1f} s")
    summary = summarise(list(done.values()), args.labels, args.strategies, args.probe, args.reference)
    print_summary(summary, args.labels, args.strategies, args.probe, args.reference)
    (args.out / "summary.json").write_text(json.dumps({
        "curve": {s: {str(n): v for n, v in c.items()} for s, c in summary["curve"].items()},
        "verdicts": {s: {str(n): v.to_dict() for n, v in d.items()} for s, d in summary["verdicts"].items()},
        "check": summary["check"]}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    from gridtune.errors import GridtuneError

    try:
        sys.exit(main())
    except GridtuneError as exc:
        print(f"bench_transfer: error: {exc}", file=sys.stderr)
        sys.exit(2)
