"""gridtune: physics-informed fine-tuning of graph neural networks across power grids.

The public API (imported lazily, so `import gridtune` and `gridtune --help` stay fast):

    open_dataset(recipe_or_dir, samples=...)          build or reuse a labelled OPF dataset
    cases(grids=None)                                 the shipped cases with their nominal AC-OPF
    pretrain(data, out_dir, task=..., model=..., train=...)          -> PretrainResult
    distill(teacher, data, out_dir, unlabeled=..., model=...)         -> DistillResult (a lean student)
    finetune(checkpoint, data, out_dir, labels=..., strategy=...)    -> FinetuneResult
    verdict(results)                                  transfer verdict over seeds (bootstrap interval)
    evaluate(checkpoint, data, out_dir=None)          -> report dict
    load_model(checkpoint)                            -> (model, meta), any checkpoint
    calibrate(checkpoint, data, alpha=...)            conformal sets and a familiarity threshold
    predict(checkpoint, data, out=...)                per-scenario predictions, sets, fallback action
    run_study(spec_or_path, out_dir)                  -> StudyOutcome
    model_preset(name, **overrides)                   a named ModelConfig (`fast`: fast inference)
    ModelConfig, TrainConfig, PretrainConfig, TransferConfig, DistillConfig   typed configs
    PretrainResult, FinetuneResult                    typed results
    GridtuneError                                     base of every error gridtune raises

Worker processes never re-run the caller's code, so the API works from a plain script (no
`if __name__ == "__main__":` guard needed), from standard input and from a notebook.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "open_dataset": ("gridtune.grids.dataset", "open_dataset"),
    "cases": ("gridtune.grids.cases", "case_table"),
    "pretrain": ("gridtune.workflows.pretrain", "pretrain"),
    "distill": ("gridtune.workflows.distill", "distill"),
    "finetune": ("gridtune.workflows.transfer", "finetune"),
    "verdict": ("gridtune.workflows.transfer", "verdict"),
    "evaluate": ("gridtune.workflows.evaluate", "evaluate_checkpoint"),
    "load_model": ("gridtune.nn.checkpoint", "load_checkpoint"),
    "calibrate": ("gridtune.workflows.trust", "calibrate"),
    "predict": ("gridtune.workflows.trust", "predict"),
    "run_study": ("gridtune.studies.runner", "run_study"),
    "load_study": ("gridtune.studies.spec", "load_study"),
    "ModelConfig": ("gridtune.nn.model", "ModelConfig"),
    "model_preset": ("gridtune.nn.model", "model_preset"),
    "DistillConfig": ("gridtune.workflows.distill", "DistillConfig"),
    "TrainConfig": ("gridtune.core.trainer", "TrainConfig"),
    "PretrainConfig": ("gridtune.workflows.configs", "PretrainConfig"),
    "TransferConfig": ("gridtune.workflows.configs", "TransferConfig"),
    "PretrainResult": ("gridtune.workflows.results", "PretrainResult"),
    "FinetuneResult": ("gridtune.workflows.results", "FinetuneResult"),
    "GridtuneError": ("gridtune.errors", "GridtuneError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'gridtune' has no attribute '{name}'")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
