"""Per-site adaptation of the global model with the core's strategies, and the two references
every personalised result is compared with: the global model as released, and a model trained on
the site's own data alone.

    finetune  every weight from the global ones (strategy `full`)
    head      a new head per site on the frozen shared encoder (strategy `head-swap`)
    adapter   bottleneck adapters per site after each encoder block, encoder frozen (`adapter`)

Personalisation reads only the site's own data and the released global weights: under DP it is
post-processing of the global model, so it spends none of the other sites' budget (docs/federated.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gridtune.federated.client import Job, score, site_model, site_task
from gridtune.federated.sites import Site
from gridtune.federated.weights import derived_seed, set_weights

LOCAL_STREAM = 104729  # separates the local-only baseline's seed from the rounds' seeds


def _strategy(method: str, job: Job) -> Any:
    from gridtune.core.registry import make_strategy
    from gridtune.nn.heads import make_head

    if method == "finetune":
        return make_strategy("full")
    if method == "head":
        hidden = job.spec.model.head_hidden
        return make_strategy("head-swap", head=lambda dim: make_head("feasibility", dim, hidden), freeze_encoder=True)
    return make_strategy("adapter", bottleneck=max(4, job.spec.model.hidden // 4))


def _train_config(job: Job, epochs: int, seed: int) -> Any:
    from gridtune.core.trainer import TrainConfig

    return TrainConfig(epochs=epochs, lr=job.spec.train.lr, batch_size=job.spec.train.batch_size,
                       patience=job.spec.personalise.patience, seed=seed)


def evaluate_site(job: Job, index: int, weights: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Test metrics on site `index` of the global model, each personalisation and local-only."""
    from gridtune.core.adapt import adapt
    from gridtune.core.trainer import fit, make_loader, torch_threads

    site: Site = job.site(index)
    task = site_task(site)
    out: dict[str, dict[str, float]] = {}
    with torch_threads(1):
        model = site_model(job, site)
        set_weights(model, weights, job.spec.shares)
        out["global"] = score(model, site.test, task)
        seed = derived_seed(job.seed, index)
        batch = job.spec.train.batch_size
        for method in job.spec.personalise.methods:
            model = site_model(job, site)
            set_weights(model, weights, job.spec.shares)
            config = _train_config(job, job.spec.personalise.epochs, seed)
            model, _ = adapt(model, _strategy(method, job), make_loader(site.train, batch, shuffle=True, seed=seed),
                             make_loader(site.val, 256, shuffle=False), task, config)
            out[method] = score(model, site.test, task)
        local = site_model(job, site)  # the run's initial model (`init`'s, if any), trained on this site alone
        config = _train_config(job, job.spec.personalise.local_epochs, derived_seed(job.seed, index, LOCAL_STREAM))
        fit(local, make_loader(site.train, batch, shuffle=True, seed=config.seed),
            make_loader(site.val, 256, shuffle=False), task, config)
        out["local"] = score(local, site.test, task)
    return out
