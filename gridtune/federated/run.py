"""The federated workflow: sites -> privacy budget -> federated rounds -> personalisation ->
per-site metrics, epsilon spent, plots and a report.

    result = run_federated(load_spec("fed.toml"), "runs/fed")

Writes `config.json` (the spec as run), `results.json` (every seed: rounds, failures, per-site test
metrics of `global`, each personalisation and `local`, epsilon per site), `report.md` and
`plots/<site>.png` to the output directory.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gridtune.errors import TrainingError
from gridtune.federated.client import Job, site_model
from gridtune.federated.spec import FederatedSpec
from gridtune.federated.weights import get_weights


def privacy_plan(job: Job) -> tuple[tuple[float, ...], float | None, dict[str, Any]]:
    """Noise multipliers before any training: per site (record level) or for the server (client
    level), each the given one when it reaches the budget, else the smallest that does."""
    from gridtune.federated.privacy import noise_for_budget, sample_rate, steps_per_epoch

    p, spec = job.spec.privacy, job.spec
    if p.kind == "record":
        sigmas = []
        for i, name in enumerate(job.site_names):
            n = len(job.site(i).train)
            steps = spec.rounds * spec.local_epochs * steps_per_epoch(n, spec.train.batch_size)
            sigmas.append(noise_for_budget(p.epsilon, p.delta, sample_rate(n, spec.train.batch_size), steps,
                                           p.noise_multiplier, who=f" on site `{name}`"))
        return tuple(sigmas), None, {}
    if p.kind == "client":
        return (), noise_for_budget(p.epsilon, p.delta, 1.0, spec.rounds, p.noise_multiplier), {}
    return (), None, {}


def epsilon_report(job: Job, rounds: list[Any], client_noise: float | None) -> dict[str, Any]:
    """Epsilon at delta for the steps actually taken (a round a site was asked to train in counts,
    answered or not)."""
    from gridtune.federated.privacy import epsilon_spent, sample_rate, steps_per_epoch

    p, spec = job.spec.privacy, job.spec
    if p.kind == "none":
        return {"kind": "none"}
    if p.kind == "client":
        steps = sum(1 for r in rounds if len(r.sites) >= spec.min_sites)
        return {"kind": "client", "delta": p.delta, "noise_multiplier": client_noise, "sample_rate": 1.0,
                "steps": steps, "epsilon": epsilon_spent(float(client_noise), 1.0, steps, p.delta)}
    per_site = {}
    for i, name in enumerate(job.site_names):
        n = len(job.site(i).train)
        taken = sum(1 for r in rounds if i in r.sites or i in r.failed)
        steps = taken * spec.local_epochs * steps_per_epoch(n, spec.train.batch_size)
        q = sample_rate(n, spec.train.batch_size)
        per_site[name] = {"noise_multiplier": job.noise_multipliers[i], "sample_rate": q, "steps": steps,
                          "epsilon": epsilon_spent(job.noise_multipliers[i], q, steps, p.delta)}
    return {"kind": "record", "delta": p.delta, "per_site": per_site,
            "epsilon": max(s["epsilon"] for s in per_site.values())}


def train_federated(job: Job, work_dir: Path, *, on_round: Callable[[int, Any], None] | None = None
                    ) -> dict[str, Any]:
    """The federated rounds of one seed; returns the final weights, the round records, the
    engine's report and the privacy figures. `on_round(round, nodes)` is called as each round
    starts, with the loopback `engine.Nodes` (None in simulation)."""
    from gridtune.federated.engine import loopback, simulate
    from gridtune.federated.server import make_strategy

    _, client_noise, _ = privacy_plan(job) if job.spec.privacy.kind == "client" else ((), None, {})
    initial = get_weights(site_model(job, job.site(0)), job.spec.shares)
    nodes: dict[str, Any] = {}
    hook = None if on_round is None else (lambda r: on_round(r, nodes.get("nodes")))
    strategy = make_strategy(job.spec, job.seed, initial, len(job.site_names), client_noise=client_noise,
                             on_round_start=hook)
    start = time.perf_counter()
    engine: dict[str, Any] = {"mode": job.spec.mode}
    if job.spec.mode == "simulation":
        simulate(job, strategy)
    else:
        engine.update(loopback(job, strategy, work_dir, on_nodes=lambda n: nodes.update(nodes=n)))
    engine["wall_time_s"] = time.perf_counter() - start
    short = [r.round for r in strategy.rounds if len(r.sites) < job.spec.min_sites]
    if len(strategy.rounds) < job.spec.rounds or short:
        raise TrainingError(f"federated run (seed {job.seed}) stopped: rounds {short or 'after ' + str(len(strategy.rounds))} "
                            f"had fewer than min_sites `{job.spec.min_sites}` answering sites; see the site logs "
                            f"in `{work_dir}`")
    return {"weights": strategy.weights, "rounds": strategy.rounds, "engine": engine,
            "privacy": epsilon_report(job, strategy.rounds, client_noise)}


def run_federated(spec: FederatedSpec, out_dir: str | Path, *, workers: int | None = None,
                  progress: bool = False, on_round: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Run `spec` for each of its seeds and write results, plots and the report to `out_dir`
    (`on_round`: see `train_federated`)."""
    from gridtune.federated.personalise import evaluate_site
    from gridtune.federated.report import summarise, write_plots, write_report
    from gridtune.federated.sites import resolve_sites, site_name
    from gridtune.files import write_json
    from gridtune.specs import to_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_table(spec))
    dirs = resolve_sites(spec.sites, samples=spec.samples, workers=workers, progress=progress)
    names = tuple(site_name(s) for s in spec.sites)
    runs = []
    for seed in spec.seeds:
        job = Job(spec, seed, names, tuple(dirs))
        sigmas, _, _ = privacy_plan(job)  # a budget out of reach stops here, before training
        job = dataclasses.replace(job, noise_multipliers=sigmas)
        trained = train_federated(job, out / f"seed-{seed}", on_round=on_round)
        sites = {name: evaluate_site(job, i, trained["weights"]) for i, name in enumerate(names)}
        runs.append({"seed": seed, "engine": trained["engine"], "privacy": trained["privacy"],
                     "rounds": [dataclasses.asdict(r) for r in trained["rounds"]],
                     "sites": sites, "n_test": {n: len(job.site(i).test) for i, n in enumerate(names)},
                     "global_weights_sha": weights_digest(trained["weights"])})
    result = {"sites": list(names), "site_dirs": dirs, "runs": runs, "summary": summarise(runs, names)}
    write_json(out / "results.json", result, indent=1)
    write_plots(result, out / "plots")
    write_report(result, spec, out / "report.md")
    return result


def weights_digest(weights: list[np.ndarray]) -> str:
    """A short hash of the global weights (float64 bytes): equal digests, bit-identical models."""
    import hashlib

    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
