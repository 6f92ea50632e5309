"""`gridtune distill TEACHER --data DATA --out DIR [--unlabeled N] [--model-option KEY=VALUE ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train a lean feasibility model on a trained one's probabilities "
                                       "(fast inference)")
    p.add_argument("teacher", type=Path, help="feasibility checkpoint directory")
    p.add_argument("--data", required=True, help="the teacher's data: recipe .toml, dataset directory or case name")
    p.add_argument("--out", required=True, type=Path, help="the student's checkpoint directory")
    p.add_argument("--samples", type=int, help="use the first N scenarios (as the teacher did)")
    p.add_argument("--unlabeled", type=int, default=0, metavar="N",
                   help="fresh scenarios drawn from the recipe and labelled by the teacher alone, "
                        "no OPF solve (default: 0)")
    p.add_argument("--label-weight", type=float, default=0.5,
                   help="weight of the real label in a labelled scenario's target; the rest is the "
                        "teacher's probability (default: 0.5)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="the student's ModelConfig settings over the `fast` preset, e.g. `hidden=32`, "
                        "or `preset=NAME`; repeatable")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs (default: 200)")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default: 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate over epochs (default: constant)")
    p.add_argument("--batch-size", type=int, default=64, help="graphs per batch (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batches and draws (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (default: 1)")
    p.add_argument("--workers", type=int, help="processes for building the dataset (default: all cores)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from gridtune.core.trainer import TrainConfig
    from gridtune.errors import GridtuneError
    from gridtune.evaluation.evaluate import summary_lines
    from gridtune.nn.checkpoint import read_config
    from gridtune.nn.model import ModelConfig
    from gridtune.parallel import check_workers
    from gridtune.workflows.configs import parse_model_options
    from gridtune.workflows.distill import DistillConfig, distill

    # every setting is checked before any data is built or read
    check_workers(args.workers)
    if args.samples is not None and args.samples < 1:
        raise GridtuneError(f"--samples must be at least 1, got `{args.samples}`")
    read_config(args.teacher)
    model = ModelConfig(**parse_model_options(["preset=fast", *(args.model_option or [])]))  # a later preset wins
    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                        seed=args.seed, lr_schedule=None if args.lr_schedule == "constant" else args.lr_schedule)
    config = DistillConfig(model=model, train=train, unlabeled=args.unlabeled, label_weight=args.label_weight,
                           samples=args.samples)
    r = distill(args.teacher, args.data, args.out, config, workers=args.workers, progress=True,
                threads=args.threads)
    teacher_auroc = r.teacher_test.get("auroc")
    print(f"checkpoint {args.out}  ({r.trainable_parameters} parameters, {r.epochs_run} epochs, best "
          f"{r.best_epoch}, {r.train_wall_time_s:.1f} s; {r.graphs['labelled']} labelled, "
          f"{r.graphs['unlabelled_split'] + r.graphs['drawn']} teacher-only graphs)")
    if teacher_auroc is not None:
        print(f"teacher    AUROC {teacher_auroc:.4f} on the same test graphs")
    print("\n".join(summary_lines(r.test)))
    return 0
