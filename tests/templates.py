"""The recipe and study TOML that tests and benchmarks write: one home for them.

Used by `tests/grids/recipes.py`, `tests/faults.py` (kills and resumes) and
`benchmarks/bench_memory.py` (peak memory), which imports it from a checkout.
"""

from __future__ import annotations

from collections.abc import Sequence


def recipe_toml(samples: int, *, case: str = "case9", seed: int = 5, scale: str = "[0.9, 2.2]",
                candidates: int = 3, dc: bool = False) -> str:
    """A recipe with a fixed load-scale range (no calibration solves), half the scenarios N-1.

    Args:
        samples: scenarios to label.
        case: the grid (default: `"case9"`).
        seed: the scenario seed (default: `5`).
        scale: the load-scale range as TOML (default: `"[0.9, 2.2]"`, straddles case9's boundary).
        candidates: candidate topologies (default: `3`).
        dc: also label with DC-OPF (default: `False`).
    """
    return f"""
case = "{case}"
samples = {samples}
seed = {seed}
[loads]
scale = {scale}
noise = 0.05
[topology]
n_minus_1 = 0.5
candidates = {candidates}
[labels]
solutions = true
dc = {"true" if dc else "false"}
"""


def study_toml(name: str, *, data: str = "case9", strategies: Sequence[str] = ("full", "linear-probe"),
               seeds: Sequence[int] = (0, 1), samples: int | None = None) -> str:
    """A small feasibility study, `data` -> `data` at 10 labels, 3 epochs of a 16-wide model.

    Args:
        name: the study's name.
        data: a case name (its dataset is built: `samples` scenarios of case9's test recipe) or a
            built dataset directory (default: `"case9"`).
        strategies: fine-tuning strategies (default: full and linear probe).
        seeds: seeds; cells = seeds x strategies (default: `(0, 1)`).
        samples: scenarios of the dataset to build, with a `[data]` table; `None` for a built
            dataset (default: `None`).
    """
    quoted = ", ".join(f'"{s}"' for s in strategies)
    data_table = "" if samples is None else f"""
[data]
samples = {samples}
[data.overrides]
loads = {{ scale = [0.9, 2.2] }}
topology = {{ candidates = 3 }}
labels = {{ dc = false }}
"""
    return f"""
name = "{name}"
task = "feasibility"
sources = ["{data}"]
targets = ["{data}"]
pairs = "all"
strategies = [{quoted}]
labels = [10]
seeds = {list(seeds)}
{data_table}
[pretrain]
epochs = 3
hidden = 16
layers = 2

[finetune]
epochs = 3
patience = 2
"""
