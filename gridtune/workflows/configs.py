"""Typed configs of the grid workflows, validated when built (a typo fails before any data is read).

    PretrainConfig(task="feasibility", model=ModelConfig(...), train=TrainConfig(...), split=...)
    TransferConfig(labels=100, strategy="lora", seed=0, train=TrainConfig(...), ...)

Every field changes a result and is reachable from the CLI (`gridtune pretrain` / `finetune`
flags, `--model-option KEY=VALUE`), the Python API (`gridtune.pretrain(..., **fields)`) and a
study spec (`[pretrain]`, `[finetune]`, `[model]` tables) alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gridtune.constraints.formulations import FORMULATIONS
from gridtune.core.trainer import TrainConfig
from gridtune.errors import GridtuneError, SpecError, choices_text
from gridtune.grids.split import SPLIT_FRACTIONS, parse_split
from gridtune.nn.heads import check_task
from gridtune.nn.model import ModelConfig

NORMALIZERS = ("source", "target")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """What `pretrain` trains and how.

    Attributes:
        task: `feasibility`, `opf` or `cost` (default: `feasibility`).
        model: the model's hyper-parameters (`gridtune.nn.model.ModelConfig`).
        train: optimisation (`gridtune.core.trainer.TrainConfig`; its `seed` also seeds the
            split).
        split: train / validation / test fractions, stratified by status (default 0.7 / 0.15 /
            0.15); stored in the checkpoint, so evaluation scores the same test split. A larger
            test share measures ECE more precisely (a few hundred test graphs put the ECE of a
            perfectly calibrated model near 0.05 by sampling noise alone).
        samples: use the first `samples` scenarios only (default: all).
        include_unknown: feasibility only: count `unknown` scenarios (AC solver failed, nothing
            certified) as infeasible instead of leaving them out (default: False).
        self_supervised_epochs: first this many epochs of masked-feature reconstruction
            (`gridtune.core.ssl`) on scenarios whose labels are not used: the training split of
            every source, whatever its status, plus `unlabeled` fresh draws per source; then the
            supervised training (default: 0, none).
        unlabeled: fresh scenarios drawn per source from its recipe for the self-supervised
            epochs, without any OPF solve (default: 0).
    """

    task: str = "feasibility"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    split: tuple[float, float, float] = SPLIT_FRACTIONS
    samples: int | None = None
    include_unknown: bool = False
    self_supervised_epochs: int = 0
    unlabeled: int = 0

    def __post_init__(self) -> None:
        check_task(self.task)
        for key in ("self_supervised_epochs", "unlabeled"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise SpecError(f"{key} must be a non-negative integer, got `{value}`")
        if self.unlabeled > 0 and self.self_supervised_epochs == 0:
            raise SpecError(f"unlabeled = `{self.unlabeled}` draws scenarios for self-supervised "
                            "pre-training: also give self_supervised_epochs > 0")
        object.__setattr__(self, "split", parse_split(self.split))
        if self.samples is not None and (not isinstance(self.samples, int) or self.samples < 1):
            raise SpecError(f"samples must be a positive integer, got `{self.samples}`")
        if not isinstance(self.model, ModelConfig) or not isinstance(self.train, TrainConfig):
            raise SpecError("PretrainConfig.model must be a ModelConfig and .train a TrainConfig, "
                            f"got `{type(self.model).__name__}` and `{type(self.train).__name__}`")


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """What `finetune` does to a checkpoint on target data.

    Attributes:
        labels: labelled target graphs used (training + early stopping), at least 4.
        strategy: a registered strategy name (`gridtune finetune --list-strategies`).
        seed: seeds the split, the label draw, new weights and shuffling (default: 0).
        unlabeled: unlabelled target scenarios (no OPF solve) for domain adaptation, two-stage
            pre-adaptation and constraint terms (default: 0).
        constraints: a constraint spec (shipped name or TOML path) added as a training term;
            violations on the test split are reported (default: none).
        formulation: `penalty`, `lagrangian` (default) or `augmented-lagrangian`.
        with_scratch: also train the scratch baseline at the same labels and seed (default: True).
        pre_adapt_epochs: first this many epochs of masked-feature reconstruction on the
            unlabelled scenarios (`gridtune.core.ssl`), then the strategy (default: 0).
        normalizer: input statistics of the adapted model: `source` keeps the checkpoint's;
            `target` refits them on the target's labelled and unlabelled graphs (the
            input-statistics analogue of AdaBN; Li et al. 2017) (default: `source`).
        train: optimisation (`TrainConfig`; its seed is replaced by `seed`).
        split: train / validation / test fractions of the target data (default 0.7 / 0.15 /
            0.15). Labels are drawn from the training part only, so a verdict can afford a
            large test share (e.g. `0.3,0.1,0.6`: 1200 test scenarios of 2000) without costing
            labels.
        report_constraints: further constraint specs whose violations on the test split the
            result reports under `violations` (e.g. the sets a study compares), whatever was
            trained (default: none).
        conformal_alpha: feasibility only: after fine-tuning, calibrate conformal sets at this
            miscoverage level on the target's validation split (labelled scenarios the model
            never trained on; they cost solver time beyond `labels`, reported as
            `trust.n_calibration`) and score the solver fallback on the test split: coverage,
            share answered by the model, error among answered (default: none).
        source_data: the source's labelled data for strategy `replay` (recipes, dataset
            directories or case names; for a model pre-trained across several grids, each of
            them); only their training split (the checkpoint's split seed and fractions) is
            replayed (default: none).
        source_samples: scenarios read from each source, as pre-training read them (default:
            the checkpoint's own count for one source, else all).
    """

    labels: int
    strategy: str
    seed: int = 0
    unlabeled: int = 0
    constraints: str | None = None
    formulation: str = "lagrangian"
    with_scratch: bool = True
    pre_adapt_epochs: int = 0
    normalizer: str = "source"
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    split: tuple[float, float, float] = SPLIT_FRACTIONS
    report_constraints: tuple[str, ...] = ()
    conformal_alpha: float | None = None
    source_data: tuple[str, ...] = ()
    source_samples: int | None = None

    def __post_init__(self) -> None:
        from gridtune.core.conformal import check_alpha
        from gridtune.core.registry import strategy_class

        cls = strategy_class(self.strategy)  # an unknown name lists the valid ones
        if not isinstance(self.labels, int) or self.labels < 4:
            raise GridtuneError(f"--labels must be at least 4 (train + early-stopping split), "
                                f"got `{self.labels}`")
        if self.unlabeled < 0:
            raise GridtuneError(f"--unlabeled must be >= 0, got `{self.unlabeled}`")
        if self.normalizer not in NORMALIZERS:
            raise GridtuneError(f"unknown normalizer `{self.normalizer}`; valid: {choices_text(NORMALIZERS)}")
        if self.formulation not in FORMULATIONS:
            raise GridtuneError(f"unknown formulation `{self.formulation}`; valid: {choices_text(FORMULATIONS)}")
        if self.pre_adapt_epochs < 0 or (self.pre_adapt_epochs > 0 and self.unlabeled == 0):
            raise GridtuneError(f"--pre-adapt `{self.pre_adapt_epochs}` needs a non-negative number of "
                                "epochs and unlabelled target data (`--unlabeled N`)")
        if cls.needs_unlabeled and self.unlabeled == 0:
            raise GridtuneError(f"strategy `{self.strategy}` needs unlabelled target data: pass `--unlabeled N`")
        source_data = (self.source_data,) if isinstance(self.source_data, (str, Path)) else self.source_data
        object.__setattr__(self, "source_data", tuple(str(s) for s in source_data))
        if self.source_data and not cls.needs_source:
            raise GridtuneError(f"--source-data is read by strategy `replay` only, not `{self.strategy}`")
        if self.source_samples is not None and self.source_samples < 1:
            raise GridtuneError(f"--source-samples must be at least 1, got `{self.source_samples}`")
        if self.constraints is not None:
            object.__setattr__(self, "constraints", str(self.constraints))
        object.__setattr__(self, "train", dataclasses.replace(self.train, seed=self.seed))
        object.__setattr__(self, "split", parse_split(self.split))
        object.__setattr__(self, "report_constraints", tuple(str(c) for c in self.report_constraints))
        if self.conformal_alpha is not None:
            object.__setattr__(self, "conformal_alpha", check_alpha(self.conformal_alpha, "conformal alpha"))


def with_fields(config_cls: type, config: Any, fields: dict[str, Any]) -> Any:
    """`config` (or a default one) with `fields` replaced; an unknown field names the valid ones."""
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise GridtuneError(f"unknown {config_cls.__name__} field(s) {', '.join(f'`{u}`' for u in unknown)}; "
                            f"valid: {choices_text(sorted(valid))}")
    if config is None:
        return config_cls(**fields)
    return dataclasses.replace(config, **fields) if fields else config


def parse_model_options(items: list[str] | None) -> dict[str, Any]:
    """`["edge_readout=false", "hidden=32"]` -> ModelConfig overrides, typed by ModelConfig's
    fields; an unknown key or a bad value is one `SpecError` naming what is valid.
    `preset=NAME` stands for the settings of `gridtune.nn.model.MODEL_PRESETS[NAME]`, and the
    other options override them (e.g. `preset=fast`, `hidden=32`)."""
    from gridtune.nn.model import MODEL_PRESETS
    from gridtune.specs import from_table

    table: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SpecError(f"model option `{item}` is not KEY=VALUE, e.g. `edge_readout=false`")
        table[key.strip().replace("-", "_")] = _literal(raw.strip())
    if "preset" in table:
        name = table.pop("preset")
        if name not in MODEL_PRESETS:
            raise SpecError(f"model option `preset={name}` is not a preset; valid: {choices_text(MODEL_PRESETS)}")
        table = {**MODEL_PRESETS[name], **table}
    from_table(ModelConfig, table, where="--model-option")  # validates keys and types
    return table


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
