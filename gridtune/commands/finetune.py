"""`gridtune finetune --from CHECKPOINT --data TARGET --labels N --strategy NAME --out DIR`.

Writes a checkpoint, `finetune.json` (metrics, trainable parameters, wall time, the scratch
baseline at the same labels and seed) and `history.json`. With several seeds
(`--seed 0 1 2`) each seed goes to `DIR/seed_<s>` and `DIR/verdict.json` holds the transfer
verdict (gain over scratch with a bootstrap interval). `--list-strategies` prints every strategy.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="adapt a checkpoint to target data with a fine-tuning strategy")
    p.add_argument("--from", dest="checkpoint", type=Path, help="checkpoint directory to start from")
    p.add_argument("--data", help="target recipe .toml, dataset directory or default case name")
    p.add_argument("--labels", type=int, help="labelled target graphs to use (training + early stopping)")
    p.add_argument("--strategy", help="strategy name (see --list-strategies)")
    p.add_argument("--unlabeled", type=int, default=0,
                   help="unlabelled target scenarios for domain adaptation (no OPF solve; default: 0)")
    p.add_argument("--pre-adapt", type=int, default=0, metavar="EPOCHS",
                   help="two-stage: masked-feature reconstruction on the unlabelled scenarios "
                        "for EPOCHS epochs before fine-tuning (needs --unlabeled; default: 0)")
    p.add_argument("--source-data", nargs="+", default=[], metavar="DATA",
                   help="strategy replay: the source's labelled data (recipe, dataset directory or "
                        "case name; each grid of a multi-source model); its training split is replayed")
    p.add_argument("--source-samples", type=int, metavar="N",
                   help="scenarios read from each --source-data, as pre-training read them "
                        "(default: the checkpoint's own count for one source)")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="one or more seeds; several give a transfer verdict (default: 0)")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--constraints", type=Path, help="constraint spec (TOML, or a shipped set "
                   "such as monotone_load) enforced while training")
    p.add_argument("--formulation", default="lagrangian",
                   help="penalty, lagrangian or augmented-lagrangian (default: lagrangian)")
    p.add_argument("--normalizer", default="source",
                   help="input statistics: the checkpoint's (source, default) or refitted on the "
                        "target's labelled + unlabelled graphs (target)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions of the target data; labels come from the train "
                        "part, so a large test share costs no labels (default: 0.7,0.15,0.15)")
    p.add_argument("--no-scratch", action="store_true", help="skip the scratch baseline")
    p.add_argument("--conformal-alpha", type=float, metavar="A",
                   help="feasibility: calibrate conformal sets at miscoverage A on the target's validation "
                   "split and report coverage and the solver fallback on its test split")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs (default: 200)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="graphs per batch (default: 64)")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience (default: 20)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate over epochs: constant, or a half cosine to 0 (default: constant)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default: 1)")
    p.add_argument("--list-strategies", action="store_true", help="print every strategy and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.core.registry import strategies_text
    from gridtune.errors import GridtuneError
    from gridtune.files import write_json

    if args.list_strategies:
        print(strategies_text())
        return 0
    missing = [flag for flag, v in (("--from", args.checkpoint), ("--data", args.data),
                                    ("--labels", args.labels), ("--strategy", args.strategy),
                                    ("--out", args.out)) if v is None]
    if missing:
        raise GridtuneError(f"missing {', '.join(f'`{m}`' for m in missing)}; usage: gridtune finetune "
                            "--from CHECKPOINT --data TARGET --labels N --strategy NAME --out DIR")
    from gridtune.core.trainer import TrainConfig
    from gridtune.nn.tasks import primary_metric
    from gridtune.workflows.configs import TransferConfig
    from gridtune.workflows.transfer import finetune, verdict

    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        patience=args.patience, weight_decay=args.weight_decay,
                        lr_schedule=None if args.lr_schedule == "constant" else args.lr_schedule)
    seeds = list(dict.fromkeys(args.seed))
    # every setting is checked (strategy name, budgets, pairings) before anything is loaded
    configs = [TransferConfig(labels=args.labels, strategy=args.strategy, seed=seed,
                              unlabeled=args.unlabeled, constraints=args.constraints,
                              formulation=args.formulation, with_scratch=not args.no_scratch,
                              pre_adapt_epochs=args.pre_adapt, normalizer=args.normalizer,
                              split=args.split, train=train, conformal_alpha=args.conformal_alpha,
                              source_data=tuple(args.source_data), source_samples=args.source_samples)
               for seed in seeds]
    results = []
    for config in configs:
        out = args.out if len(seeds) == 1 else args.out / f"seed_{config.seed}"
        r = finetune(args.checkpoint, args.data, out, config, threads=args.threads)
        results.append(r)
        key = primary_metric(r.task)
        line = (f"seed {config.seed}: {args.strategy} {key} {_fmt(r.metrics.get(key))}  "
                f"({r.trainable_parameters} trainable, {r.wall_time_s:.1f} s)")
        if r.scratch:
            line += f"  scratch {_fmt(r.scratch['metrics'].get(key))}"
        print(line)
        if r.trust:
            t = r.trust
            print(f"  coverage {_fmt(t['coverage'])} at alpha {t['alpha']:g} ({t['n_calibration']} calibration "
                  f"scenarios); model answers {_fmt(t['answered_share'])} of the test split, error among "
                  f"answered {_fmt(t['error_among_answered'])}")
    if len(seeds) > 1 and not args.no_scratch and args.strategy != "scratch":  # scratch is its own baseline
        v = verdict(results)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "verdict.json", v.to_dict())
        print(f"transfer gain {v.gain_mean:+.4f} [{v.ci_low:+.4f}, {v.ci_high:+.4f}] over "
              f"{v.n_seeds} seeds: {v.label}" + (f" ({v.note})" if v.note else ""))
    print(f"results in {args.out}")
    return 0


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
