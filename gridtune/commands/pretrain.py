"""`gridtune pretrain --data RECIPE_OR_DIR --task feasibility|opf|cost --out DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="train a grid GNN (feasibility, OPF or cost) and write a checkpoint")
    p.add_argument("--data", required=True, help="recipe .toml, dataset directory or default case name")
    p.add_argument("--task", required=True, help="feasibility, opf or cost")
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory")
    p.add_argument("--samples", type=int, help="use (and if needed build) the first N scenarios")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs (default: 200)")
    p.add_argument("--model", default="gine", help="gine, gatv2 or transformer (default: gine)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, weights and batches (default: 0)")
    p.add_argument("--hidden", type=int, default=64, help="width (default: 64)")
    p.add_argument("--layers", type=int, default=4, help="message-passing blocks (default: 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="graphs per batch (default: 64)")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default: 20)")
    p.add_argument("--workers", type=int, help="processes for building the dataset (default: all cores)")
    p.add_argument("--backend", default="local", help="local (process pool) or ray, for building data")
    p.add_argument("--include-unknown", action="store_true",
                   help="feasibility: count `unknown` scenarios (AC failed, uncertified) as infeasible")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default: 1)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions, stratified by status (default: 0.7,0.15,0.15)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.errors import GridtuneError
    from gridtune.nn.encoders import resolve_conv
    from gridtune.nn.heads import check_task
    from gridtune.nn.pretrain import parse_split, pretrain
    from gridtune.parallel import check_backend, check_workers

    # check names before building any data: a typo must not cost an hour of OPF solves
    check_task(args.task)
    resolve_conv(args.model)
    check_backend(args.backend)
    check_workers(args.workers)
    split = parse_split(args.split)
    if args.samples is not None and args.samples < 1:
        raise GridtuneError(f"--samples must be at least 1, got `{args.samples}`")
    m = pretrain(args.data, task=args.task, out_dir=args.out, model=args.model, epochs=args.epochs,
                 seed=args.seed, samples=args.samples, hidden=args.hidden, layers=args.layers,
                 lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                 workers=args.workers, backend=args.backend, progress=True, threads=args.threads,
                 include_unknown=args.include_unknown, split=split)
    from gridtune.evaluation.evaluate import summary_lines

    print(f"checkpoint {args.out}  ({m['trainable_params']} parameters, {m['epochs_run']} epochs, "
          f"best {m['best_epoch']}, {m['train_wall_time_s']:.1f} s, "
          f"{m['train_graphs_per_s']:.0f} graphs/s)")
    print("\n".join(summary_lines(m["test"])))
    return 0
