"""Task heads: small MLPs (plain `nn.Linear`) on top of `GridModelNet.embed`.

Heads output *standardised* values (or raw logits); `GridModelNet.forward` maps them to physical
units with the normaliser, so a head can be swapped (`model.head = make_head(...)`) without
carrying statistics of its own.
"""

from __future__ import annotations

from torch import Tensor, nn

from gridtune.errors import GridtuneError, choices_text
from gridtune.grids.features import OPF_TARGETS
from gridtune.grids.labels import TASKS
from gridtune.nn.encoders import mlp

# task -> (graph level?, outputs per item), in `TASKS` order
TASK_SHAPES: dict[str, tuple[bool, int]] = dict(zip(TASKS, ((True, 1), (False, len(OPF_TARGETS)), (True, 1)),
                                                    strict=True))


def check_task(task: str) -> str:
    if task not in TASKS:
        raise GridtuneError(f"unknown task `{task}`; valid: {choices_text(TASKS)}")
    return task


class Head(nn.Module):
    """MLP head `embed_dim -> hidden -> hidden -> outputs`, or linear `embed_dim -> outputs`
    with `hidden = 0`.

    Args:
        embed_dim: width of the representation from `embed`.
        hidden: hidden width; 0 for a linear head (default: 64).
        outputs: values per graph (graph-level tasks) or per bus (node-level); a single output is
            squeezed so graph-level heads return (B,).

    Shapes:
        (B, embed_dim) -> (B,) for one output; (N, embed_dim) -> (N, outputs) otherwise.
    """

    def __init__(self, embed_dim: int, hidden: int = 64, outputs: int = 1) -> None:
        super().__init__()
        self.mlp = mlp([embed_dim, outputs] if hidden == 0 else [embed_dim, hidden, hidden, outputs])
        self.outputs = outputs

    def forward(self, z: Tensor) -> Tensor:
        out = self.mlp(z)
        return out.squeeze(-1) if self.outputs == 1 else out


def make_head(task: str, embed_dim: int, hidden: int = 64) -> Head:
    """The head for `task` (`feasibility`, `opf`, `cost`)."""
    _, outputs = TASK_SHAPES[check_task(task)]
    return Head(embed_dim, hidden, outputs)
