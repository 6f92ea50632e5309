"""The shared part of a site's model: its parameters, as numpy arrays in a fixed order.

`shared = "all"` exchanges every parameter, `shared = "head"` those of the head alone (the
encoder stays the `init` checkpoint's). Buffers stay on the site: the input normaliser (fitted on
the site's own training split, as in FedBN, Li et al. 2021, which keeps normalisation local; or
the `init` checkpoint's) and the Platt calibration. So the released global model is the shared
parameters alone, and no site's input statistics leave it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def shared_parameters(model: nn.Module, shared: str = "all") -> list[nn.Parameter]:
    """The parameters a round exchanges, in `named_parameters` order: all, or the head's."""
    return [p for name, p in model.named_parameters() if shared == "all" or name.startswith("head.")]


def get_weights(model: nn.Module, shared: str = "all") -> list[np.ndarray]:
    """The shared parameters as float64 arrays (exact for float32)."""
    return [p.detach().cpu().numpy().astype(np.float64) for p in shared_parameters(model, shared)]


def set_weights(model: nn.Module, weights: list[np.ndarray], shared: str = "all") -> None:
    params = shared_parameters(model, shared)
    if len(params) != len(weights):
        raise ValueError(f"{len(weights)} arrays for {len(params)} parameters")
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(torch.as_tensor(w, dtype=p.dtype).view_as(p))


def flatten(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.ravel() for w in weights]) if weights else np.zeros(0)


def unflatten(vector: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, at = [], 0
    for w in like:
        out.append(vector[at:at + w.size].reshape(w.shape))
        at += w.size
    return out


def derived_seed(*parts: int) -> int:
    """One 32-bit seed from several integers (run seed, round, site): the same in every process."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])
