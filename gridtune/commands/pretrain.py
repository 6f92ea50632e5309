"""`gridtune pretrain --data DATA [DATA ...] --task feasibility|opf|cost --out DIR [--leave-one-out]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="train a grid GNN (feasibility, OPF or cost) and write a checkpoint")
    p.add_argument("--data", required=True, nargs="+", metavar="DATA",
                   help="recipe .toml, dataset directory or case name; several pre-train one model "
                        "across grids (each split by its own statuses)")
    p.add_argument("--leave-one-out", action="store_true",
                   help="with several --data: for each grid, pre-train on the others and score "
                        "zero-shot on the held-out grid (OUT/without-<grid>, OUT/leave_one_out.json)")
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
    p.add_argument("--self-supervised", type=int, default=0, metavar="EPOCHS",
                   help="first EPOCHS of masked-feature reconstruction on scenarios whose labels are not "
                   "used (the training split, plus --unlabeled draws per source), then supervised training")
    p.add_argument("--unlabeled", type=int, default=0, metavar="N",
                   help="fresh scenarios drawn per source for --self-supervised, without any OPF solve")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions, stratified by status (default: 0.7,0.15,0.15)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate over epochs: constant, or a half cosine to 0 (default: constant)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="any other ModelConfig setting, e.g. `edge_readout=false` or "
                        "`dc_loadability=false`; repeatable (see docs/design.md, models)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.core.trainer import TrainConfig
    from gridtune.errors import GridtuneError
    from gridtune.evaluation.evaluate import summary_lines
    from gridtune.nn.model import ModelConfig
    from gridtune.parallel import check_backend, check_workers
    from gridtune.workflows.configs import PretrainConfig, parse_model_options
    from gridtune.workflows.pretrain import pretrain

    # every setting is checked before any data is built: a typo must not cost an hour of OPF solves
    check_backend(args.backend)
    check_workers(args.workers)
    if args.samples is not None and args.samples < 1:
        raise GridtuneError(f"--samples must be at least 1, got `{args.samples}`")
    model = ModelConfig(**{"conv": args.model, "hidden": args.hidden, "layers": args.layers,
                           **parse_model_options(args.model_option)})
    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        patience=args.patience, seed=args.seed, weight_decay=args.weight_decay,
                        lr_schedule=None if args.lr_schedule == "constant" else args.lr_schedule)
    config = PretrainConfig(task=args.task, model=model, train=train, split=args.split,
                            samples=args.samples, include_unknown=args.include_unknown,
                            self_supervised_epochs=args.self_supervised, unlabeled=args.unlabeled)
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    if args.leave_one_out:
        from gridtune.workflows.pretrain import leave_one_out

        summary = leave_one_out(list(args.data), args.out, config, workers=args.workers,
                                backend=args.backend, progress=True, threads=args.threads)
        for grid, row in summary.items():
            auroc = (row["zero_shot"] or {}).get("auroc")
            print(f"held out {grid}: zero-shot {config.task} "
                  + (f"AUROC {auroc:.4f}" if auroc is not None else "(see leave_one_out.json)")
                  + f" on {row['n_test']} test graphs, trained on {', '.join(row['trained_on'])}")
        print(f"written    {args.out / 'leave_one_out.json'}")
        return 0
    m = pretrain(data, args.out, config, workers=args.workers, backend=args.backend,
                 progress=True, threads=args.threads)
    print(f"checkpoint {args.out}  ({m.trainable_parameters} parameters, {m.epochs_run} epochs, "
          f"best {m.best_epoch}, {m.train_wall_time_s:.1f} s, {m.train_graphs_per_s:.0f} graphs/s)")
    if m.self_supervised:
        ssl = m.self_supervised
        print(f"self-supervised {ssl['epochs']} epochs on {ssl['graphs']} graphs ({ssl['drawn']} drawn "
              f"unlabelled): masked loss {ssl['loss'][0]:.4g} -> {ssl['loss'][-1]:.4g}, {ssl['wall_time_s']:.1f} s")
    print("\n".join(summary_lines(m.test)))
    for grid, report in (m.per_source or {}).items():
        print(f"-- {grid}")
        print("\n".join(summary_lines(report)[1:]))
    return 0
