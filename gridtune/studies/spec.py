"""Study specs: a TOML file naming sources, targets, strategies, label budgets, seeds, constraints.

An example (the dataclasses below list every key and its default; the shipped study
`quickstart`, gridtune/resources/studies/quickstart.toml, sets a few of them):

    name = "quickstart"
    task = "feasibility"            # feasibility | opf | cost
    sources = ["case14"]            # default case names, recipe .toml paths or built dataset
                                    # directories (relative to this file)
    targets = ["case30"]
    strategies = ["full", "linear-probe"]
    labels = [25, 100]              # target label budgets
    seeds = [0]
    unlabeled = 0                   # unlabelled target scenarios, drawn for the cells that use
                                    # them (domain adaptation, pre-adaptation, target normaliser,
                                    # constraint terms)
    constraints = ["monotone_load"] # constraint spec .toml paths, or shipped set names; each
                                    # adds constrained cells
    formulations = ["lagrangian", "penalty_x10"]  # each constrained cell runs one; a name of
                                    # [formulation_settings] is a formulation with its own settings
    report_constraints = []         # further sets whose test violations every cell reports
    pairs = "cross"                 # cross: skip source == target (or a member of the source
                                    # set); all: keep them
    reach = [0.95, 0.99]            # report the labels and AC-OPF hours each strategy, scratch
                                    # and zero-shot need for the headline metric to reach each

    [source_sets]                   # a source named here is ONE model pre-trained across these
    ieee4 = ["case14", "case30", "case39", "case57"]   # grids (multi-source); list it in sources

    [formulation_settings.penalty_x10]   # a variant: formulation + settings for every set
    formulation = "penalty"
    scale = 10.0

    [data]
    samples = 200                   # scenarios per dataset (overrides each recipe)
    [data.overrides]                # applied to every recipe, validated like a recipe
    topology = { candidates = 8 }

    [model]                         # any `gridtune.nn.model.ModelConfig` field (pre-training)
    hidden = 64
    balance_pg = false

    [pretrain]                      # once per source; `gridtune.workflows.configs.PretrainConfig`
    epochs = 40
    lr_schedule = "cosine"
    split = [0.7, 0.15, 0.15]
    include_unknown = false

    [finetune]                      # every cell and its scratch baseline; `TransferConfig`
    epochs = 200
    patience = 20
    normalizer = "source"           # source | target
    pre_adapt_epochs = 0
    split = [0.3, 0.1, 0.6]         # target train / validation / test fractions
    with_scratch = true             # train the scratch baseline (transfer gain and verdicts)
    conformal_alpha = 0.05          # feasibility: coverage and the solver fallback per cell

    [[federated]]                   # a federated cell per seed (docs/federated.md): a spec file
    name = "zones"                  # (relative to this file) and / or inline federated keys;
    spec = "fed_zones.toml"         # inline keys override the file's; `seeds` are the study's
    rounds = 5

A study may hold only federated cells: `sources`, `targets`, `strategies` and `labels` are then
left out.

This module holds the typed tables and their validation only. `load_study` reads and validates a
file (unknown keys and bad values name the file and the key, before any work); the study is then
resolved once into a plan (`gridtune.studies.plan.make_plan`: recipes, configs, cells,
fingerprints), which the runner executes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Literal

from gridtune.errors import SpecError, choices_text
from gridtune.specs import (
    from_table,
    read_toml,
    resolve_spec_file,
    shipped_names,
    shipped_path,
    to_table,
)
from gridtune.studies.overrides import apply_overrides

PAIRS = ("cross", "all")
MODELS = ("gine", "gatv2", "transformer")
LR_SCHEDULES = ("cosine",)
MIN_LABELS = 4  # `TransferConfig.labels`: training + early-stopping split
# Headline metric per task and whether higher is better; a spec may name another metric.
# Test-split metrics each task reports (gridtune.nn.tasks, gridtune.evaluation.metrics).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "feasibility": ("auroc", "auprc", "f1", "balanced_accuracy", "accuracy", "ece", "brier",
                    "log_loss"),
    "opf": ("std_mse", "mae_vm_pu", "mae_va_rad", "mae_pg_pu", "mae_qg_pu"),
    "cost": ("mape_cost", "mae_cost"),
}
HEADLINE: dict[str, tuple[str, bool]] = {
    "feasibility": ("auroc", True),
    "opf": ("std_mse", False),
    "cost": ("mape_cost", False),
}
# A metric is an error (lower is better) when a word of its name is one of these.
ERROR_WORDS = {"loss", "mae", "mse", "rmse", "mape", "ece", "brier", "nll", "gap", "balance"}


def _at_least_one(obj: Any, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(obj, key) < 1:
            raise SpecError(f"key `{key}` = `{getattr(obj, key)}` must be at least 1")


def _optimisation(obj: Any) -> None:
    """Checks shared by [pretrain] and [finetune]: lr, weight decay, schedule, clipping."""
    if not 0 < obj.lr < 1:
        raise SpecError(f"key `lr` = `{obj.lr}` must lie in (0, 1)")
    if obj.weight_decay < 0:
        raise SpecError(f"key `weight_decay` = `{obj.weight_decay}` must be >= 0")
    if obj.lr_schedule is not None and obj.lr_schedule not in LR_SCHEDULES:
        raise SpecError(f"key `lr_schedule` = `{obj.lr_schedule}`; valid: "
                        f"{choices_text(LR_SCHEDULES)} (leave it out for a constant rate)")
    if obj.grad_clip_norm is not None and obj.grad_clip_norm <= 0:
        raise SpecError(f"key `grad_clip_norm` = `{obj.grad_clip_norm}` must be > 0")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """How the study's datasets are built.

    Args:
        samples: scenarios per dataset; overrides each recipe (default: the recipe's own).
        overrides: a partial recipe applied to every source and target recipe, e.g.
            ``{"topology": {"candidates": 8}}`` (default: none).
    """

    samples: int | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.samples is not None and self.samples < 2:
            raise SpecError(f"key `samples` = `{self.samples}` must be at least 2")
        for key in ("case", "samples", "source"):
            if key in self.overrides:
                raise SpecError(f"key `overrides.{key}` cannot be overridden for every dataset; "
                                "use `samples` or list the recipe in sources / targets")


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """Pre-training on each source (once per source, shared by all its cells); maps onto
    `gridtune.workflows.configs.PretrainConfig` (`gridtune.studies.plan.pretrain_config`).

    Args:
        epochs: training epochs (default: 60).
        seed: pre-training seed; also seeds the source split (default: 0).
        samples: source scenarios used (default: all of the source dataset).
        lr, weight_decay, patience, batch_size: optimisation (default: 1e-3, 0, 20, 64).
        lr_schedule: `"cosine"`, or left out for a constant rate.
        grad_clip_norm: gradient-norm clipping (default: `TrainConfig`'s).
        split: train / validation / test fractions of the source (default: 0.7 / 0.15 / 0.15).
        include_unknown: feasibility: count `unknown` scenarios as infeasible (default: false).
        self_supervised_epochs: masked-feature reconstruction epochs before the supervised
            ones, on the source's training split and `unlabeled` fresh draws (default: 0).
        unlabeled: fresh source scenarios drawn (no OPF solve) for those epochs (default: 0).
        model, hidden, layers: shorthands for `[model] conv`, `hidden`, `layers`.
    """

    epochs: int = 60
    seed: int = 0
    samples: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20
    batch_size: int = 64
    lr_schedule: str | None = None
    grad_clip_norm: float | None = None
    split: tuple[float, float, float] | None = None
    include_unknown: bool = False
    self_supervised_epochs: int = 0
    unlabeled: int = 0
    model: str | None = None
    hidden: int | None = None
    layers: int | None = None

    def __post_init__(self) -> None:
        _at_least_one(self, ("epochs", "patience", "batch_size"))
        for key in ("hidden", "layers"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise SpecError(f"key `{key}` = `{getattr(self, key)}` must be at least 1")
        _optimisation(self)
        if self.model is not None and self.model not in MODELS:
            raise SpecError(f"key `model` = `{self.model}`; valid: {choices_text(MODELS)}")
        if self.samples is not None and self.samples < 2:
            raise SpecError(f"key `samples` = `{self.samples}` must be at least 2")

    def model_fields(self) -> dict[str, Any]:
        """The shorthands as `ModelConfig` fields (only those given)."""
        named = {"conv": self.model, "hidden": self.hidden, "layers": self.layers}
        return {k: v for k, v in named.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """Every cell (and its scratch baseline); maps onto `TransferConfig` and its `TrainConfig`
    (`gridtune.studies.plan.transfer_config`).

    Args:
        epochs: maximum epochs (default: 200).
        patience: early-stopping patience in epochs (default: 20).
        lr: learning rate (default: 1e-3).
        weight_decay: AdamW weight decay (default: 0).
        batch_size: graphs per batch (default: 64).
        lr_schedule: `"cosine"`, or left out for a constant rate.
        grad_clip_norm: gradient-norm clipping (default: `TrainConfig`'s).
        normalizer: input statistics of the adapted model: `source` (the checkpoint's) or
            `target` (refitted on the target's labelled and unlabelled graphs) (default: source).
        pre_adapt_epochs: masked-feature reconstruction epochs on the unlabelled target
            scenarios before the strategy (default: 0; needs `unlabeled`).
        split: train / validation / test fractions of the target data (default: 0.7 / 0.15 /
            0.15); labels are drawn from the training part, so a large test share costs none.
        with_scratch: train the scratch baseline, once per group of cells that share target,
            labels, seed and constraint (default: true); without it there is no transfer gain
            or verdict (e.g. a study that compares constraint formulations).
        conformal_alpha: feasibility studies: calibrate each fine-tuned model's conformal sets
            at this miscoverage level on the target's validation split and report coverage and
            the solver fallback (share answered by the model, error among answered) beside the
            headline metric (default: none).
    """

    epochs: int = 200
    patience: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    lr_schedule: str | None = None
    grad_clip_norm: float | None = None
    normalizer: Literal["source", "target"] = "source"
    pre_adapt_epochs: int = 0
    split: tuple[float, float, float] | None = None
    with_scratch: bool = True
    conformal_alpha: float | None = None

    def __post_init__(self) -> None:
        _at_least_one(self, ("epochs", "patience", "batch_size"))
        _optimisation(self)
        if self.pre_adapt_epochs < 0:
            raise SpecError(f"key `pre_adapt_epochs` = `{self.pre_adapt_epochs}` must be >= 0")
        if self.conformal_alpha is not None and not 0.0 < self.conformal_alpha < 1.0:
            raise SpecError(f"key `conformal_alpha` = `{self.conformal_alpha}` is not valid: give a "
                            "miscoverage level strictly between 0 and 1, e.g. 0.05")


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A study: every (source, target, strategy, labels, seed, constraint, formulation) cell.

    See the module docstring for the file format. `base_dir` is the directory of the spec file;
    relative recipe and constraint paths are resolved against it.
    """

    name: str
    sources: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    labels: tuple[int, ...] = ()
    task: Literal["feasibility", "opf", "cost"] = "feasibility"
    seeds: tuple[int, ...] = (0,)
    unlabeled: int = 0
    constraints: tuple[str, ...] = ()
    formulations: tuple[str, ...] = ("lagrangian",)
    formulation_settings: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    unconstrained: bool = True
    report_constraints: tuple[str, ...] = ()
    pairs: Literal["cross", "all"] = "cross"
    source_sets: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    metric: str | None = None
    reach: tuple[float, ...] = ()
    data: DataSpec = DataSpec()
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrain: PretrainSpec = PretrainSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    federated: tuple[dict[str, Any], ...] = ()
    base_dir: str = "."

    def __post_init__(self) -> None:
        if not self.name.strip() or any(c in self.name for c in "/\\"):
            raise SpecError(f"key `name` = `{self.name}` must be a non-empty name without slashes")
        transfer = ("sources", "targets", "strategies", "labels")
        for key in (*transfer, "seeds"):
            values = getattr(self, key)
            if not values and (key == "seeds" or not self.federated
                               or any(getattr(self, k) for k in transfer)):
                raise SpecError(f"key `{key}` is empty; list at least one")
            if len(set(values)) != len(values):
                dup = next(v for v in values if list(values).count(v) > 1)
                raise SpecError(f"key `{key}` lists `{dup}` twice")
        bad = [n for n in self.labels if n < MIN_LABELS]
        if bad:
            raise SpecError(f"key `labels` has budget `{bad[0]}`; every budget must be at least "
                            f"{MIN_LABELS} (training + early-stopping labels)")
        if self.unlabeled < 0:
            raise SpecError(f"key `unlabeled` = `{self.unlabeled}` must be >= 0")
        if self.constraints and not self.formulations:
            raise SpecError("key `formulations` is empty but `constraints` are listed")
        if not self.constraints and not self.unconstrained:
            raise SpecError("key `unconstrained` = `false` with no `constraints` leaves no cells")
        if self.labels and self.data.samples is not None and max(self.labels) >= self.data.samples:
            raise SpecError(f"key `labels` budget `{max(self.labels)}` must be below "
                            f"`data.samples` = `{self.data.samples}` (test scenarios are held out)")
        for name, table in self.formulation_settings.items():
            if name not in self.formulations:
                raise SpecError(f"key `formulation_settings.{name}` names no formulation listed "
                                "in `formulations`; list it there or remove it")
            if not isinstance(table, dict) or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
                raise SpecError(f"key `formulation_settings.{name}` must be a table named with "
                                "letters, digits and . _ + - only")
        if self.metric is not None and self.metric not in TASK_METRICS[self.task]:
            raise SpecError(f"key `metric` = `{self.metric}` is not a `{self.task}` metric; valid: "
                            f"{choices_text(TASK_METRICS[self.task])}")
        for value in self.reach:
            if not math.isfinite(value):
                raise SpecError(f"key `reach` holds `{value}`; list finite values of the headline "
                                "metric, e.g. [0.95, 0.99]")
        self._check_source_sets()
        if self.sources and self.pairs == "cross" and all(
                t in self.source_members(s) for s in self.sources for t in self.targets):
            raise SpecError(f"with `pairs = \"cross\"` the only pair `{self.sources[0]}` -> "
                            f"`{self.sources[0]}` is skipped; add another target or set "
                            "`pairs = \"all\"`")
        if self.model:
            from gridtune.nn.model import ModelConfig

            from_table(ModelConfig, self.model, where="[model]")  # keys and types of ModelConfig
            for key, value in self.pretrain.model_fields().items():
                if key in self.model and self.model[key] != value:
                    short = "model" if key == "conv" else key
                    raise SpecError(f"key `pretrain.{short}` = `{value}` contradicts "
                                    f"`model.{key}` = `{self.model[key]}`; set one of them")

    # ---- derived --------------------------------------------------------------------------

    @property
    def headline(self) -> tuple[str, bool]:
        """(metric, higher_is_better) used for transfer gain, plots and the summary."""
        if self.metric is None:
            return HEADLINE[self.task]
        return self.metric, not ERROR_WORDS.intersection(self.metric.split("_"))

    def _check_source_sets(self) -> None:
        sets = {}
        for name, members in self.source_sets.items():
            if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
                raise SpecError(f"key `source_sets.{name}`: name a set with letters, digits and "
                                ". _ + - only")
            if (not isinstance(members, (list, tuple)) or len(members) < 2
                    or not all(isinstance(m, str) and m for m in members)):
                raise SpecError(f"key `source_sets.{name}` must list at least two grids (case "
                                f"names, recipe .toml paths or dataset directories), got `{members}`")
            if len(set(members)) != len(members):
                raise SpecError(f"key `source_sets.{name}` lists a grid twice")
            if name not in self.sources:
                raise SpecError(f"key `source_sets.{name}` is not listed in `sources`; list it "
                                "there or remove it")
            sets[name] = tuple(members)
        object.__setattr__(self, "source_sets", sets)
        for name in self.targets:
            if name in sets:
                raise SpecError(f"key `targets` names source set `{name}`; a target is one grid")

    def source_members(self, ref: str) -> tuple[str, ...]:
        """The grids a `sources` entry pre-trains on: a source set's members, or the entry."""
        return self.source_sets.get(ref, (ref,))

    def resolve(self, ref: str) -> str:
        """A recipe path or dataset directory (resolved against the spec's directory), or a case
        name, unchanged."""
        if ref.endswith(".toml") or is_dataset_directory(Path(self.base_dir) / ref):
            return str((Path(self.base_dir) / ref).resolve())
        return ref

    def constraint_path(self, ref: str) -> Path:
        """A constraint spec path (relative to the spec's directory), or, when no such file
        exists, a shipped constraint set named without `.toml` (``"monotone_load"``)."""
        return resolve_spec_file("constraints", ref, base_dir=self.base_dir).resolve()

    def to_dict(self) -> dict[str, Any]:
        return to_table(self)


def is_dataset_directory(path: str | Path) -> bool:
    """A built dataset directory (it holds a manifest), used as it is."""
    return (Path(path) / "manifest.json").is_file()


def load_study(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and validate a study spec; nothing is built, resolved or trained here.

    Checks, in order: TOML syntax and keys / types (naming file and key), recipe and constraint
    files exist, case names are known, strategy and formulation names exist, every constraint
    set applies to the task. Resolving recipes and configs (`gridtune.studies.plan.make_plan`)
    checks the rest, still before any work.

    Args:
        path: the study .toml, or the name of a shipped study (``"quickstart"``; see
            `shipped_names("studies")`) when no such file exists.
        overrides: keys replacing the file's values, dotted for sub-tables (e.g.
            ``{"seeds": (0,), "data.samples": 100}``; `gridtune.studies.overrides`); validated
            like the file.
    """
    path = resolve_spec_file("studies", path)
    if not path.is_file() and path.suffix != ".toml":
        raise SpecError(f"study `{path}` is neither a file nor a shipped study; shipped: "
                        f"{choices_text(shipped_names('studies'))}")
    table = read_toml(path)
    where = str(path)
    if "base_dir" in table:
        raise SpecError(f"{where}: unknown key `base_dir`")
    apply_overrides(table, overrides)
    if not table.get("federated"):  # a transfer study: its matrix keys are required
        missing = [k for k in ("sources", "targets", "strategies", "labels") if k not in table]
        if missing:
            raise SpecError(f"{where}: missing required key `{missing[0]}`")
    table["base_dir"] = str(path.resolve().parent)
    spec = from_table(StudySpec, table, where=where)
    check_files(spec, where)
    check_study(spec, where)
    federated_specs(spec, where)  # every federated cell's spec, validated before any work
    return spec


def check_files(spec: StudySpec, where: str) -> None:
    """Recipe / constraint paths exist and case names are known."""
    for key in ("sources", "targets"):
        refs = getattr(spec, key)
        if key == "sources":
            refs = [m for ref in refs for m in spec.source_members(ref)]
        for ref in refs:
            if is_dataset_directory(spec.resolve(ref)):
                continue
            if ref.endswith(".toml"):
                if not Path(spec.resolve(ref)).is_file():
                    raise SpecError(f"{where}: key `{key}` names recipe `{ref}`, which does not "
                                    f"exist (looked in `{spec.base_dir}`)")
            elif shipped_path("datasets", ref) is None and not _known_case(ref):
                raise SpecError(f"{where}: key `{key}` names unknown case `{ref}`; use a default "
                                f"case name{_case_choices()} or a recipe .toml path")
    for key in ("constraints", "report_constraints"):
        for ref in getattr(spec, key):
            if not spec.constraint_path(ref).is_file():
                raise SpecError(f"{where}: key `{key}` names `{ref}`, which does not exist "
                                f"(looked in `{spec.base_dir}`); name a .toml file or a shipped "
                                f"constraint set{_constraint_choices()}")


def _constraint_choices() -> str:
    names = shipped_names("constraints")
    return f" ({choices_text(names)})" if names else ""


def _known_case(name: str) -> bool:
    try:
        from gridtune.grids.cases import CASES  # type: ignore[attr-defined]
    except ImportError:
        return False
    return name in CASES


def _case_choices() -> str:
    try:
        from gridtune.grids.cases import CASES  # type: ignore[attr-defined]
    except ImportError:
        CASES = ()
    names = list(CASES) + [n for n in shipped_names("datasets") if n not in CASES]
    return f" ({choices_text(names)})" if names else ""


def formulation_of(spec: StudySpec, name: str) -> str:
    """The formulation a `formulations` entry runs: its own name, or the `formulation` key of
    its `[formulation_settings.<name>]` variant."""
    return str(spec.formulation_settings.get(name, {}).get("formulation", name))


def formulation_overrides(spec: StudySpec, name: str) -> dict[str, Any]:
    """The settings a `formulations` entry adds to each constraint set's `[formulation.<f>]`."""
    return {k: v for k, v in spec.formulation_settings.get(name, {}).items() if k != "formulation"}


def check_study(spec: StudySpec, where: str = "study") -> None:
    """Checks that need the strategy / constraint registries: strategy and formulation names
    exist, every constraint set applies to the study's task. Runs before any work."""
    from gridtune.core.registry import strategy_names

    valid = strategy_names()
    for name in spec.strategies:
        if name not in valid:
            raise SpecError(f"{where}: key `strategies` names unknown strategy `{name}`; valid: "
                            f"{choices_text(valid)}")
    if not spec.constraints and not spec.report_constraints:
        return
    from gridtune.constraints.formulations import FORMULATIONS
    from gridtune.constraints.spec import load_constraint_set

    if spec.constraints:
        for name in spec.formulations:
            if name not in FORMULATIONS and name not in spec.formulation_settings:
                raise SpecError(f"{where}: key `formulations` names unknown formulation `{name}`; "
                                f"valid: {choices_text(FORMULATIONS)}, or a variant defined in "
                                "[formulation_settings]")
            base = formulation_of(spec, name)
            if base not in FORMULATIONS:
                raise SpecError(f"{where}: key `formulation_settings.{name}.formulation` = "
                                f"`{base}`; valid: {choices_text(FORMULATIONS)}")
    for key in ("constraints", "report_constraints"):
        for ref in getattr(spec, key):
            try:
                load_constraint_set(spec.constraint_path(ref), spec.task)
            except SpecError as exc:
                raise SpecError(f"{where}: key `{key}`: {exc}") from None


FEDERATED_KEYS = ("name", "spec")
"""Keys of a `[[federated]]` entry besides the federated spec's own."""


def federated_specs(spec: StudySpec, where: str = "study") -> dict[str, Any]:
    """{name: FederatedSpec} of the `[[federated]]` entries, each validated with the study's seeds.

    An entry names a federated spec file (`spec`, relative to the study) and / or gives federated
    spec keys inline (overriding the file's; inline site paths are relative to the study).
    """
    from gridtune.federated.spec import resolve_site_paths, spec_from_table

    out: dict[str, Any] = {}
    for i, entry in enumerate(spec.federated):
        at = f"{where}: [[federated]] entry {i + 1}"
        name = entry.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise SpecError(f"{at}: key `name` = `{name}` must name the cell with letters, digits "
                            "and . _ + - only")
        if name in out:
            raise SpecError(f"{at}: name `{name}` is used twice")
        if "seeds" in entry:
            raise SpecError(f"{at} (`{name}`): key `seeds` is the study's; remove it from the entry")
        inline = {k: v for k, v in entry.items() if k not in FEDERATED_KEYS}
        table: dict[str, Any] = {}
        ref = entry.get("spec")
        if ref is not None:
            path = Path(spec.base_dir) / str(ref)
            if not path.is_file():
                raise SpecError(f"{at} (`{name}`): key `spec` names `{ref}`, which does not exist "
                                f"(looked in `{spec.base_dir}`)")
            table = resolve_site_paths(read_toml(path), path.resolve().parent)
            table.pop("seeds", None)
        table.update(resolve_site_paths(inline, spec.base_dir))
        out[name] = spec_from_table(table, spec.base_dir, where=f"{at} (`{name}`)",
                                    seeds=list(spec.seeds))
    return out
