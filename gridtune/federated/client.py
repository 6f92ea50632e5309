"""A site's part of a round: load the global weights, train on its own data, send the weights back.

`local_round` is the whole computation and is a pure function of (global weights, site, round,
job): the Flower client (`SiteClient`) wraps it unchanged in the in-process simulation and in a
loopback process, so both modes give the same numbers for a seed. Under record-level DP the
weights leaving the site are DP-SGD outputs (`gridtune.federated.privacy`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from gridtune.federated.sites import Site, open_site
from gridtune.federated.spec import FederatedSpec
from gridtune.federated.weights import derived_seed, get_weights, set_weights, shared_parameters


@dataclasses.dataclass(frozen=True)
class Job:
    """What every client of one federated run needs (picklable; JSON for loopback processes).

    Attributes:
        spec: the run's spec.
        seed: the run's seed.
        site_names, site_dirs: each site's name and built dataset directory, by site index.
        noise_multipliers: record-level DP-SGD noise per site (empty without record-level DP).
    """

    spec: FederatedSpec
    seed: int
    site_names: tuple[str, ...]
    site_dirs: tuple[str, ...]
    noise_multipliers: tuple[float, ...] = ()

    def site(self, index: int) -> Site:
        return open_site(self.site_names[index], self.site_dirs[index], self.spec.samples, self.seed,
                         self.spec.split)

    def to_dict(self) -> dict[str, Any]:
        from gridtune.specs import to_table

        return {"spec": to_table(self.spec), "seed": self.seed, "site_names": list(self.site_names),
                "site_dirs": list(self.site_dirs), "noise_multipliers": list(self.noise_multipliers)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        from gridtune.specs import from_table

        return cls(from_table(FederatedSpec, d["spec"], where="job"), int(d["seed"]), tuple(d["site_names"]),
                   tuple(d["site_dirs"]), tuple(float(s) for s in d["noise_multipliers"]))


def site_model(job: Job, site: Site) -> Any:
    """The run's initial model on a site: the spec's `init` checkpoint (its weights and input
    normaliser), or the grid model as `gridtune.workflows.pretrain` builds it with this site's
    normaliser and weights seeded by the run seed alone. Either way every site and the server
    start from the same weights."""
    from gridtune.nn.model import build_model
    from gridtune.nn.normalizer import Normalizer

    if job.spec.init is not None:
        model = copy.deepcopy(_init_model(job.spec.init))
        model.train()
        return model
    torch.manual_seed(job.seed)
    return build_model(job.spec.model, "feasibility", Normalizer().fit(site.train))


@functools.lru_cache(maxsize=2)
def _init_model(checkpoint: str) -> Any:
    """The `init` checkpoint's model, read once per process (a simulated client is rebuilt every
    round); callers take a copy."""
    from gridtune.nn.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)[0]


def site_task(site: Site) -> Any:
    from gridtune.nn.tasks import make_task
    from gridtune.workflows.pretrain import class_balance

    return make_task("feasibility", **class_balance(site.train))


def score(model: Any, graphs: list[Any], task: Any) -> dict[str, float]:
    """The task's metrics (AUROC, log loss, ...) of `model` on `graphs`."""
    from gridtune.core.trainer import evaluate, make_loader

    return evaluate(model, make_loader(graphs, 256, shuffle=False), task)


class Embedded(NamedTuple):
    """A training graph as the head sees it on a frozen encoder: its embedding and its label
    (torch's default collation stacks a list of them into one batch of the same type)."""

    z: torch.Tensor
    y_infeasible: torch.Tensor


def embedded(model: Any, graphs: list[Any]) -> list[Embedded]:
    """Each graph's embedding by the (frozen) encoder, computed once, in eval mode."""
    from gridtune.core.trainer import make_loader

    model.eval()
    out = []
    with torch.no_grad():
        for batch in make_loader(graphs, 256, shuffle=False):
            z, y = model.embed(batch), batch.y_infeasible.view(-1)
            out += [Embedded(z[i], y[i]) for i in range(len(y))]
    model.train()
    return out


def head_example_loss(model: Any, task: Any) -> Callable[[Embedded], torch.Tensor]:
    """The loss of one embedded graph through the head (DP-SGD's per-example loss on a frozen
    encoder; equal to `privacy.graph_loss` for the graph)."""

    def loss(example: Embedded) -> torch.Tensor:
        one = Embedded(example.z.unsqueeze(0), example.y_infeasible.view(1))
        return task.loss(model.head_logits(one.z), one)

    return loss


def round_task(job: Job, site: Site) -> Any:
    """The loss of the rounds: class-balanced from the site's counts, or, with `init`, unweighted,
    so that under record-level DP no statistic of the site's data shapes a gradient (the
    normaliser is then the public checkpoint's too)."""
    from gridtune.nn.tasks import make_task

    return make_task("feasibility") if job.spec.init is not None else site_task(site)


def local_round(job: Job, index: int, weights: list[np.ndarray], server_round: int,
                proximal_mu: float = 0.0) -> tuple[list[np.ndarray], int, dict[str, float]]:
    """Train site `index` from `weights` for the spec's local epochs; return the new weights, the
    number of training graphs and metrics (without DP, the received global model's validation
    AUROC; under record-level DP, the noise multiplier used). With `shared = "head"` the
    encoder is frozen: each training graph is embedded once and the head trains on the
    embeddings (the same losses and gradients as through the whole model)."""
    from gridtune.core.trainer import make_loader, torch_threads

    spec = job.spec
    site = job.site(index)
    with torch_threads(1):
        model = site_model(job, site)
        set_weights(model, weights, spec.shares)
        task = round_task(job, site)
        # under DP nothing computed from the site's data leaves it except the privatised weights
        val = np.nan if spec.privacy.kind != "none" else float(score(model, site.val, task).get("auroc", np.nan))
        metrics = {"site": float(index), "val_auroc_global": val}
        seed = derived_seed(job.seed, server_round, index)
        torch.manual_seed(seed)
        model.requires_grad_(False)  # what is not shared stays as the run started it
        params = shared_parameters(model, spec.shares)
        for p in params:
            p.requires_grad_(True)
        anchor = [p.detach().clone() for p in params]
        optimizer = spec.train.round_optimizer_for(params)
        model.train()
        if spec.shares == "head":
            examples: list[Any] = embedded(model, site.train)

            def forward(batch: Any) -> Any:
                return model.head_logits(batch.z)
        else:
            examples, forward = site.train, model

        def proximal() -> Any:
            return 0.5 * proximal_mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))

        if spec.privacy.kind == "record":
            from gridtune.federated.privacy import (
                graph_loss,
                poisson_sample,
                private_gradient,
                sample_rate,
                steps_per_epoch,
            )

            example_loss = (head_example_loss(model, task) if spec.shares == "head"
                            else graph_loss(model, task.loss))
            sigma = job.noise_multipliers[index]
            n = len(examples)
            rate = sample_rate(n, spec.train.batch_size)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(spec.local_epochs * steps_per_epoch(n, spec.train.batch_size)):
                chosen = [examples[i] for i in poisson_sample(n, rate, gen)]
                optimizer.zero_grad(set_to_none=True)
                grads = private_gradient(example_loss, chosen, params, clip_norm=spec.privacy.clip_norm,
                                         noise_multiplier=sigma, expected_batch=rate * n, generator=gen)
                if proximal_mu > 0:  # data-independent: added after the noise, costs no privacy
                    prox = torch.autograd.grad(proximal(), params, allow_unused=True)
                    grads = [g if pg is None else g + pg for g, pg in zip(grads, prox, strict=True)]
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optimizer.step()
            metrics["noise_multiplier"] = sigma
        else:
            loader = make_loader(examples, spec.train.batch_size, shuffle=True, seed=seed)
            for _ in range(spec.local_epochs):
                for batch in loader:
                    optimizer.zero_grad(set_to_none=True)
                    loss = task.loss(forward(batch), batch)
                    if proximal_mu > 0:
                        loss = loss + proximal()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 5.0)
                    optimizer.step()
        return get_weights(model, spec.shares), len(site.train), metrics


def make_client(job: Job, index: int) -> Any:
    """Site `index` as a Flower client."""
    from flwr.client import NumPyClient

    class SiteClient(NumPyClient):
        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return local_round(job, index, [np.asarray(p, dtype=np.float64) for p in parameters],
                               int(config["round"]), float(config.get("proximal_mu", 0.0)))

    return SiteClient().to_client()


def client_for_context(job: Job, context: Any) -> Any:
    """`ClientApp` factory of the simulation: the virtual node's partition id is the site index."""
    return make_client(job, int(context.node_config["partition-id"]))
