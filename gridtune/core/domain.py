"""Domain-adaptation losses on embeddings of labelled source and unlabelled target batches.

- `GradientReversal` / `DomainDiscriminator`: DANN (Ganin & Lempitsky 2015, "Unsupervised domain
  adaptation by backpropagation"; Ganin et al. 2016, JMLR): a discriminator learns to tell the
  domains apart while reversed gradients push the encoder to make them indistinguishable; the
  reversal weight ramps up as `2 / (1 + exp(-gamma * p)) - 1`, `p` going 0 -> 1 over a warm-up.
- `coral_loss`: Deep CORAL (Sun & Saenko 2016): squared Frobenius distance between the two
  feature covariances, divided by 4 d^2.
- `mmd_loss`: multi-kernel maximum mean discrepancy (Gretton et al. 2012; Long et al. 2015, DAN)
  with a family of Gaussian kernels around the median pairwise distance.

Embeddings are whatever `model.embed` returns, (B, D) or (N, D): rows are samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gridtune.errors import GridtuneError


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:  # type: ignore[override]
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.lam * grad, None


def reverse_gradient(x: Tensor, lam: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by `-lam` backward."""
    return _Reverse.apply(x, lam)


def dann_lambda(step: int, warmup_steps: int, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's schedule: 0 at step 0, close to 1 after `warmup_steps`."""
    p = min(step / max(warmup_steps, 1), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainDiscriminator(nn.Module):
    """MLP: embedding (R, D) -> domain logit (R,) (1 = target)."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def dann_loss(disc: nn.Module, zs: Tensor, zt: Tensor, lam: float) -> Tensor:
    """Domain-classification loss through a gradient reversal of weight `lam`."""
    logits_s = disc(reverse_gradient(zs, lam))
    logits_t = disc(reverse_gradient(zt, lam))
    return 0.5 * (F.binary_cross_entropy_with_logits(logits_s, torch.zeros_like(logits_s))
                  + F.binary_cross_entropy_with_logits(logits_t, torch.ones_like(logits_t)))


def _check_pair(zs: Tensor, zt: Tensor, what: str) -> None:
    if zs.dim() != 2 or zt.dim() != 2 or zs.shape[1] != zt.shape[1]:
        raise GridtuneError(f"{what}: expected two (rows, D) embeddings with the same D, got "
                            f"`{tuple(zs.shape)}` and `{tuple(zt.shape)}`")
    if zs.shape[0] < 2 or zt.shape[0] < 2:
        raise GridtuneError(f"{what}: each side needs at least 2 rows, got `{zs.shape[0]}` and "
                            f"`{zt.shape[0]}`")


def covariance(z: Tensor) -> Tensor:
    """Unbiased feature covariance, (D, D)."""
    zc = z - z.mean(dim=0, keepdim=True)
    return zc.T @ zc / (z.shape[0] - 1)


def coral_loss(zs: Tensor, zt: Tensor) -> Tensor:
    """Deep CORAL: ||C_s - C_t||_F^2 / (4 d^2); zero exactly when the covariances match."""
    _check_pair(zs, zt, "coral")
    d = zs.shape[1]
    return ((covariance(zs) - covariance(zt)) ** 2).sum() / (4 * d * d)


def mmd_loss(zs: Tensor, zt: Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
             ) -> Tensor:
    """Biased squared MMD with a sum of Gaussian kernels `exp(-||a-b||^2 / (s * m))`, m the
    median pairwise squared distance of the pooled sample (detached), s in `scales`."""
    _check_pair(zs, zt, "mmd")
    z = torch.cat([zs, zt])
    d2 = torch.cdist(z, z).pow(2)  # (R, R)
    off = d2[~torch.eye(len(z), dtype=torch.bool)]
    med = off.detach().median().clamp(min=1e-8)
    k = sum(torch.exp(-d2 / (s * med)) for s in scales)
    n = zs.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def subsample_rows(z: Tensor, max_rows: int, generator: torch.Generator) -> Tensor:
    """At most `max_rows` random rows (node-level embeddings of big batches are many)."""
    if z.shape[0] <= max_rows:
        return z
    idx = torch.randperm(z.shape[0], generator=generator)[:max_rows]
    return z[idx]
