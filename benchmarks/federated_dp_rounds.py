"""Where the DP cost of a federated global model comes from: the rounds alone, noise and clipping varied.

Runs the federated rounds of a spec in this process, site after site (`client.local_round` and
`server.aggregate`, the functions Flower's clients and strategy call, without Flower around them
and without personalisation), and scores the global model on every site's test split. Beside it
the untrained model (the run's initial weights), the floor a model that learnt nothing reaches.

    python benchmarks/federated_dp_rounds.py benchmarks/federated_sites_dp.toml --seeds 0 \
        --noise-scale 0 0.1 1 --no-dp

`--noise-scale S` multiplies the noise multiplier the budget calls for (S < 1 protects less: the
epsilon the accountant computes for it is printed); `--noise-scale 0` is the DP-SGD path with
per-graph clipping and Poisson sampling but no noise. `--no-dp` runs the spec without privacy.
Prints one row per run: mean and per-site test AUROC of the global model, epsilon, and the L2
distance the global weights moved from the initial ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def global_model(job, rounds: int) -> list[np.ndarray]:
    from gridtune.federated.client import local_round, site_model
    from gridtune.federated.server import aggregate
    from gridtune.federated.weights import get_weights

    weights = get_weights(site_model(job, job.site(0)), job.spec.shares)
    for r in range(1, rounds + 1):
        answers = [(i, *local_round(job, i, weights, r)[:2]) for i in range(len(job.site_names))]
        weights, _ = aggregate(job.spec, job.seed, r, weights, answers)
    return weights


def site_aurocs(job, weights: list[np.ndarray]) -> dict[str, float]:
    from gridtune.federated.client import score, site_model, site_task
    from gridtune.federated.weights import set_weights

    out = {}
    for i, name in enumerate(job.site_names):
        site = job.site(i)
        model = site_model(job, site)
        set_weights(model, weights, job.spec.shares)
        out[name] = float(score(model, site.test, site_task(site))["auroc"])
    return out


def run(spec, seed: int, dirs: list[str], names: tuple[str, ...], noise_scale: float | None) -> dict:
    """One seed; `noise_scale` None runs the spec as given (with or without DP)."""
    from gridtune.federated.client import Job
    from gridtune.federated.privacy import epsilon_spent, sample_rate, steps_per_epoch
    from gridtune.federated.run import privacy_plan
    from gridtune.federated.weights import flatten

    job = Job(spec, seed, names, tuple(dirs))
    sigmas, _, _ = privacy_plan(job)
    epsilon = None
    if spec.privacy.kind == "record":
        sigmas = tuple(s * (1.0 if noise_scale is None else noise_scale) for s in sigmas)
        eps = []
        for i in range(len(names)):
            n = len(job.site(i).train)
            steps = spec.rounds * spec.local_epochs * steps_per_epoch(n, spec.train.batch_size)
            eps.append(epsilon_spent(s, sample_rate(n, spec.train.batch_size), steps, spec.privacy.delta)
                       if (s := sigmas[i]) > 0 else float("inf"))
        epsilon = max(eps)
    job = dataclasses.replace(job, noise_multipliers=sigmas)
    start = time.perf_counter()
    initial = global_model(job, 0)
    weights = global_model(job, spec.rounds)
    final = site_aurocs(job, weights)
    moved = float(np.linalg.norm(flatten(weights) - flatten(initial)))
    return {"initial": site_aurocs(job, initial), "global": final, "epsilon": epsilon, "moved": moved,
            "noise_multipliers": sigmas, "wall_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="a federated spec with [privacy] kind = \"record\"")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--samples", type=int, default=None, help="scenarios per site (default: the spec's)")
    ap.add_argument("--noise-scale", type=float, nargs="*", default=[1.0],
                    help="multiples of the budget's noise multiplier to run (default: 1)")
    ap.add_argument("--clip-norm", type=float, default=None, help="[privacy] clip_norm (default: the spec's)")
    ap.add_argument("--lr", type=float, default=None, help="[train] lr (default: the spec's)")
    ap.add_argument("--no-dp", action="store_true", help="also run the spec without privacy")
    args = ap.parse_args()

    from gridtune.errors import GridtuneError
    from gridtune.federated.sites import resolve_sites, site_name
    from gridtune.federated.spec import Privacy, load_spec

    try:
        spec = load_spec(args.spec, **({} if args.samples is None else {"samples": args.samples}))
        if spec.privacy.kind != "record":
            raise GridtuneError(f"`{args.spec}` has [privacy] kind `{spec.privacy.kind}`; this benchmark "
                                "varies record-level DP-SGD (kind = \"record\")")
        if args.clip_norm is not None:
            spec = dataclasses.replace(spec, privacy=dataclasses.replace(spec.privacy, clip_norm=args.clip_norm))
        if args.lr is not None:
            spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr=args.lr))
        if any(s < 0 for s in args.noise_scale):
            raise GridtuneError(f"--noise-scale takes values >= 0, got {args.noise_scale}")
        dirs = resolve_sites(spec.sites, samples=spec.samples)
    except GridtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    names = tuple(site_name(s) for s in spec.sites)
    runs = [("no DP", dataclasses.replace(spec, privacy=Privacy()), None)] if args.no_dp else []
    runs += [(f"DP, noise x{s:g}", spec, s) for s in args.noise_scale]
    print(f"{spec.rounds} rounds x {spec.local_epochs} local epochs, batch {spec.train.batch_size}, "
          f"lr {spec.train.lr:g}, clip_norm {spec.privacy.clip_norm:g}, {spec.samples} scenarios a site")
    print("seed  run              epsilon   global  " + "  ".join(f"{n:>14}" for n in names) + "   moved  untrained")
    for seed in args.seeds:
        for label, run_spec, scale in runs:
            r = run(run_spec, seed, dirs, names, scale)
            eps = "" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
            print(f"{seed:>4}  {label:<15} {eps:>8}  {np.mean(list(r['global'].values())):.4f}  "
                  + "  ".join(f"{v:>14.4f}" for v in r["global"].values())
                  + f"  {r['moved']:6.2f}  {np.mean(list(r['initial'].values())):.4f}", flush=True)


if __name__ == "__main__":
    main()
