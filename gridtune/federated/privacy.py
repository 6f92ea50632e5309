"""Differential privacy: DP-SGD per graph, client-level DP of site updates, and the accountant.

Record level (DP-SGD, Abadi et al. 2016, "Deep learning with differential privacy"): each step
draws a Poisson sample of the site's training graphs (rate `q = batch_size / n`), computes each
graph's gradient on its own (a micro-batch of one graph: the grid GNN's inputs include per-graph
physics computed outside autograd, which `torch.func.vmap` cannot batch, and Opacus's module
wrapper does not cover PyG's message-passing layers; on a frozen encoder, `shared = "head"`, the
graph's embedding through the head), clips it to L2 norm `C`, sums, adds
`N(0, (sigma C)^2)` per coordinate and divides by the expected batch size `q n`. Opacus serves
for accounting only: `RDPAccountant` (Mironov 2017; Mironov, Talwar and Zhang 2019) composes the
site's steps over every round into epsilon at delta.

Client level (DP-FedAvg, McMahan et al. 2018, "Learning differentially private recurrent
language models"): the server clips each site's update (its weights minus the global ones) to
`C`, sums them, adds `N(0, (sigma C)^2)` and divides by the number of sites; each round is one
step at sample rate 1 (every site takes part).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gridtune.errors import SpecError


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` after `steps` sub-sampled Gaussian steps (Opacus's RDP accountant)."""
    from opacus.accountants import RDPAccountant

    if steps == 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta=float(delta)))


def noise_for_budget(epsilon: float, delta: float, sample_rate: float, steps: int,
                     noise_multiplier: float | None = None, *, who: str = "") -> float:
    """The noise multiplier a run uses: the given one when it stays within `epsilon` (otherwise a
    `SpecError` saying what it reaches), else the smallest one that does (Opacus's search)."""
    if noise_multiplier is not None:
        reached = epsilon_spent(noise_multiplier, sample_rate, steps, delta)
        if reached > epsilon:
            needed = noise_for_budget(epsilon, delta, sample_rate, steps)
            raise SpecError(f"[privacy] noise_multiplier `{noise_multiplier}` cannot reach epsilon "
                            f"`{epsilon}` at delta `{delta}`{who}: {steps} steps at sample rate "
                            f"{sample_rate:.3g} spend epsilon {reached:.3g}; use a noise_multiplier of at "
                            f"least {needed:.3g}, fewer rounds or epochs, or a larger epsilon")
        return float(noise_multiplier)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant="rdp"))
    except ValueError as exc:
        raise SpecError(f"[privacy] no noise multiplier reaches epsilon `{epsilon}` at delta `{delta}`{who} "
                        f"({steps} steps at sample rate {sample_rate:.3g}): {exc}") from None


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / batch_size))


def sample_rate(n_train: int, batch_size: int) -> float:
    return min(1.0, batch_size / n_train)


def per_example_gradients(example_loss: Callable[[Any], Tensor], examples: Sequence[Any],
                          params: list[nn.Parameter]) -> list[list[Tensor]]:
    """Each example's gradient of its own loss `example_loss(example)`."""
    out = []
    for example in examples:
        grads = torch.autograd.grad(example_loss(example), params, allow_unused=True)
        out.append([torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads, strict=True)])
    return out


def graph_loss(model: nn.Module, loss_fn: Any) -> Callable[[Any], Tensor]:
    """The loss of one graph through the whole model (a micro-batch of one graph)."""
    from torch_geometric.data import Batch

    def loss(graph: Any) -> Tensor:
        batch = Batch.from_data_list([graph])
        return loss_fn(model(batch), batch)

    return loss


def per_graph_gradients(model: nn.Module, graphs: Sequence[Any], loss_fn: Any,
                        params: list[nn.Parameter]) -> list[list[Tensor]]:
    """Each graph's gradient of its own loss (a micro-batch of one graph)."""
    return per_example_gradients(graph_loss(model, loss_fn), graphs, params)


def clip_and_sum(grads: list[list[Tensor]], clip_norm: float) -> list[Tensor]:
    """Sum of the per-graph gradients, each scaled to L2 norm at most `clip_norm`; a graph's
    contribution to the sum is therefore bounded by `clip_norm` whatever its data."""
    total = [torch.zeros_like(g) for g in grads[0]]
    for per in grads:
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in per))
        factor = min(1.0, clip_norm / (float(norm) + 1e-12))
        for t, g in zip(total, per, strict=True):
            t.add_(g, alpha=factor)
    return total


def private_gradient(example_loss: Callable[[Any], Tensor], examples: Sequence[Any], params: list[nn.Parameter],
                     *, clip_norm: float, noise_multiplier: float, expected_batch: float,
                     generator: torch.Generator) -> list[Tensor]:
    """One DP-SGD gradient: clipped per-example sum plus Gaussian noise, over the expected batch.
    An example is a graph (`graph_loss`) or, on a frozen encoder, a graph's embedding."""
    summed = (clip_and_sum(per_example_gradients(example_loss, examples, params), clip_norm) if examples
              else [torch.zeros_like(p) for p in params])
    std = noise_multiplier * clip_norm
    return [(s + std * torch.randn(s.shape, generator=generator, dtype=s.dtype)) / expected_batch
            for s in summed]


def poisson_sample(n: int, rate: float, generator: torch.Generator) -> list[int]:
    """Indices of a Poisson sample: each of `n` items independently with probability `rate`."""
    return torch.nonzero(torch.rand(n, generator=generator) < rate).view(-1).tolist()


def privatise_updates(deltas: list[np.ndarray], clip_norm: float, noise_multiplier: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Client-level DP: the noised mean of the sites' updates, each clipped to `clip_norm`.

    Only the clipped updates enter the sum, so a site whose raw update lies further out in the
    same direction changes nothing: the release depends on each raw update only through its
    clipped form, plus noise drawn independently of every update.
    """
    clipped = []
    norms = []
    for d in deltas:
        norm = float(np.linalg.norm(d))
        norms.append(norm)
        clipped.append(d * min(1.0, clip_norm / (norm + 1e-12)))
    noise = rng.normal(0.0, noise_multiplier * clip_norm, size=clipped[0].shape)
    mean = (np.sum(clipped, axis=0) + noise) / len(clipped)
    return mean, {"update_norm_max": max(norms), "clipped_share": float(np.mean([n > clip_norm for n in norms]))}
