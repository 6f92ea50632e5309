"""Study specs: a TOML file naming sources, targets, strategies, label budgets, seeds, constraints.

Example (the shipped study `quickstart`, gridtune/resources/studies/quickstart.toml):

    name = "quickstart"
    task = "feasibility"            # feasibility | opf | cost
    sources = ["case14"]            # default case names, recipe .toml paths or built dataset
                                    # directories (relative to this file)
    targets = ["case30"]
    strategies = ["full", "linear-probe"]
    labels = [25, 100]              # target label budgets
    seeds = [0]
    unlabeled = 0                   # unlabelled target scenarios for domain adaptation
    constraints = []                # constraint spec .toml paths, or shipped set names
                                    # ("monotone_load"); each adds constrained cells
    formulations = ["lagrangian"]   # used by every constrained cell
    pairs = "cross"                 # cross: skip source == target; all: keep them

    [data]
    samples = 200                   # scenarios per dataset (overrides each recipe)
    [data.overrides]                # applied to every recipe, validated like a recipe
    topology = { candidates = 8 }

    [pretrain]
    epochs = 40
    model = "gine"

    [finetune]                      # every cell and its scratch baseline
    epochs = 200
    patience = 20

Everything is validated by `load_study` before any work starts; errors name the file and the key.
"""

from __future__ import annotations

import dataclasses
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

TASKS = ("feasibility", "opf", "cost")
PAIRS = ("cross", "all")
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
    """Pre-training on each source (once per source, shared by all its cells).

    Args:
        epochs: training epochs (default: 60).
        model: encoder architecture (default: ``"gine"``).
        seed: pre-training seed (default: 0).
        samples: source scenarios used (default: all of the source dataset).
        hidden, layers: model width and depth (default: 64, 4).
        lr, patience, batch_size: optimisation (default: 1e-3, 20, 64).
    """

    epochs: int = 60
    model: str = "gine"
    seed: int = 0
    samples: int | None = None
    hidden: int = 64
    layers: int = 4
    lr: float = 1e-3
    patience: int = 20
    batch_size: int = 64

    def __post_init__(self) -> None:
        for key in ("epochs", "hidden", "layers", "patience", "batch_size"):
            if getattr(self, key) < 1:
                raise SpecError(f"key `{key}` = `{getattr(self, key)}` must be at least 1")
        if not 0 < self.lr < 1:
            raise SpecError(f"key `lr` = `{self.lr}` must lie in (0, 1)")
        models = ("gine", "gatv2", "transformer")
        if self.model not in models:
            raise SpecError(f"key `model` = `{self.model}`; valid: {choices_text(models)}")
        if self.samples is not None and self.samples < 2:
            raise SpecError(f"key `samples` = `{self.samples}` must be at least 2")


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """Optimisation of every cell (and of its scratch baseline); `gridtune.finetune.trainer.TrainConfig`.

    Args:
        epochs: maximum epochs (default: 200).
        patience: early-stopping patience in epochs (default: 20).
        lr: learning rate (default: 1e-3).
        weight_decay: AdamW weight decay (default: 0).
        batch_size: graphs per batch (default: 64).
    """

    epochs: int = 200
    patience: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        for key in ("epochs", "patience", "batch_size"):
            if getattr(self, key) < 1:
                raise SpecError(f"key `{key}` = `{getattr(self, key)}` must be at least 1")
        if not 0 < self.lr < 1:
            raise SpecError(f"key `lr` = `{self.lr}` must lie in (0, 1)")
        if self.weight_decay < 0:
            raise SpecError(f"key `weight_decay` = `{self.weight_decay}` must be >= 0")


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A study: every (source, target, strategy, labels, seed, constraint, formulation) cell.

    See the module docstring for the file format. `base_dir` is the directory of the spec file;
    relative recipe and constraint paths are resolved against it.
    """

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    strategies: tuple[str, ...]
    labels: tuple[int, ...]
    task: Literal["feasibility", "opf", "cost"] = "feasibility"
    seeds: tuple[int, ...] = (0,)
    unlabeled: int = 0
    constraints: tuple[str, ...] = ()
    formulations: tuple[str, ...] = ("lagrangian",)
    unconstrained: bool = True
    pairs: Literal["cross", "all"] = "cross"
    metric: str | None = None
    data: DataSpec = DataSpec()
    pretrain: PretrainSpec = PretrainSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    base_dir: str = "."

    def __post_init__(self) -> None:
        if not self.name.strip() or any(c in self.name for c in "/\\"):
            raise SpecError(f"key `name` = `{self.name}` must be a non-empty name without slashes")
        for key in ("sources", "targets", "strategies", "labels", "seeds"):
            values = getattr(self, key)
            if not values:
                raise SpecError(f"key `{key}` is empty; list at least one")
            if len(set(values)) != len(values):
                dup = next(v for v in values if list(values).count(v) > 1)
                raise SpecError(f"key `{key}` lists `{dup}` twice")
        bad = [n for n in self.labels if n < 2]
        if bad:
            raise SpecError(f"key `labels` has budget `{bad[0]}`; every budget must be at least 2")
        if self.unlabeled < 0:
            raise SpecError(f"key `unlabeled` = `{self.unlabeled}` must be >= 0")
        if self.constraints and not self.formulations:
            raise SpecError("key `formulations` is empty but `constraints` are listed")
        if not self.constraints and not self.unconstrained:
            raise SpecError("key `unconstrained` = `false` with no `constraints` leaves no cells")
        if self.data.samples is not None and max(self.labels) >= self.data.samples:
            raise SpecError(f"key `labels` budget `{max(self.labels)}` must be below "
                            f"`data.samples` = `{self.data.samples}` (test scenarios are held out)")
        names = [grid_label(s) for s in self.sources + self.targets]
        for ref in set(self.sources + self.targets):
            clash = [r for r in set(self.sources + self.targets)
                     if r != ref and grid_label(r) == grid_label(ref)]
            if clash:
                raise SpecError(f"grids `{ref}` and `{clash[0]}` share the name "
                                f"`{grid_label(ref)}`; rename one recipe file")
        if self.metric is not None and self.metric not in TASK_METRICS[self.task]:
            raise SpecError(f"key `metric` = `{self.metric}` is not a `{self.task}` metric; valid: "
                            f"{choices_text(TASK_METRICS[self.task])}")
        if self.pairs == "cross" and all(s == t for s in self.sources for t in self.targets):
            raise SpecError(f"with `pairs = \"cross\"` the only pair `{names[0]}` -> `{names[0]}` "
                            "is skipped; add another target or set `pairs = \"all\"`")

    # ---- derived --------------------------------------------------------------------------

    @property
    def headline(self) -> tuple[str, bool]:
        """(metric, higher_is_better) used for transfer gain, plots and the summary."""
        if self.metric is None:
            return HEADLINE[self.task]
        return self.metric, not ERROR_WORDS.intersection(self.metric.split("_"))

    def resolve(self, ref: str) -> str:
        """A recipe path or dataset directory (resolved against the spec's directory), or a case
        name, unchanged."""
        if ref.endswith(".toml") or (Path(self.base_dir) / ref / "manifest.json").is_file():
            return str((Path(self.base_dir) / ref).resolve())
        return ref

    def constraint_path(self, ref: str) -> Path:
        """A constraint spec path (relative to the spec's directory), or, when no such file
        exists, a shipped constraint set named without `.toml` (``"monotone_load"``)."""
        return resolve_spec_file("constraints", ref, base_dir=self.base_dir).resolve()

    def grid_refs(self) -> dict[str, str]:
        """Grid label -> resolved recipe reference, sources first, in spec order."""
        out: dict[str, str] = {}
        for ref in self.sources + self.targets:
            out.setdefault(grid_label(ref), self.resolve(ref))
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_table(self)


def dataset_manifest(ref: str) -> dict[str, Any] | None:
    """The manifest when `ref` is a built dataset directory (reused as is), else None."""
    from gridtune.grids.storage import load_manifest

    return load_manifest(ref)


def grid_label(ref: str) -> str:
    """Short name of a source / target: the case name, the recipe file's stem, or the grid name
    of a built dataset directory."""
    manifest = dataset_manifest(ref)
    if manifest is not None:
        return str(manifest["grid"]["name"])
    return Path(ref).stem if ref.endswith(".toml") else ref


def constraint_label(ref: str) -> str:
    return Path(ref).stem


def load_study(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and fully validate a study spec; nothing is built or trained here.

    Checks, in order: TOML syntax and keys / types (naming file and key), recipe and constraint
    files exist, case names are known, data overrides form a valid recipe, strategy and
    formulation names exist, every constraint set applies to the task (`check_study`).

    Args:
        path: the study .toml, or the name of a shipped study (``"quickstart"``; see
            `shipped_names("studies")`) when no such file exists.
        overrides: keys replacing the file's values, dotted for sub-tables (e.g.
            ``{"seeds": (0,), "data.samples": 100}``); validated like the file.
    """
    path = resolve_spec_file("studies", path)
    if not path.is_file() and path.suffix != ".toml":
        raise SpecError(f"study `{path}` is neither a file nor a shipped study; shipped: "
                        f"{choices_text(shipped_names('studies'))}")
    table = read_toml(path)
    where = str(path)
    if "base_dir" in table:
        raise SpecError(f"{where}: unknown key `base_dir`")
    for key, value in overrides.items():
        value = list(value) if isinstance(value, tuple) else value
        *parents, leaf = key.split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"override `{key}`: `{part}` is not a table")
        node[leaf] = value
    table["base_dir"] = str(path.resolve().parent)
    spec = from_table(StudySpec, table, where=where)
    check_files(spec, where)
    check_study(spec, where)
    return spec


def check_files(spec: StudySpec, where: str) -> None:
    """Recipe / constraint paths exist, case names are known, overrides make valid recipes."""
    from gridtune.grids.recipe import Recipe, recipe_for

    for key in ("sources", "targets"):
        for ref in getattr(spec, key):
            if dataset_manifest(spec.resolve(ref)) is not None:
                continue
            if ref.endswith(".toml"):
                if not Path(spec.resolve(ref)).is_file():
                    raise SpecError(f"{where}: key `{key}` names recipe `{ref}`, which does not "
                                    f"exist (looked in `{spec.base_dir}`)")
            elif shipped_path("datasets", ref) is None and not _known_case(ref):
                raise SpecError(f"{where}: key `{key}` names unknown case `{ref}`; use a default "
                                f"case name{_case_choices()} or a recipe .toml path")
    for ref in spec.constraints:
        if not spec.constraint_path(ref).is_file():
            raise SpecError(f"{where}: key `constraints` names `{ref}`, which does not exist "
                            f"(looked in `{spec.base_dir}`); name a .toml file or a shipped "
                            f"constraint set{_constraint_choices()}")
    if spec.data.overrides:
        for label, ref in spec.grid_refs().items():
            if dataset_manifest(ref) is not None:
                continue
            base = recipe_for(ref).to_dict()
            merged = _merge(base, spec.data.overrides)
            from_table(Recipe, merged, where=f"{where} [data.overrides] on `{label}`")
    if spec.task not in TASKS:  # Literal already checked; kept for programmatic construction
        raise SpecError(f"{where}: key `task` = `{spec.task}`; valid: {choices_text(TASKS)}")


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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_table(spec: StudySpec, label: str) -> dict[str, Any]:
    """The full recipe (as a table) used for grid `label` in this study: overrides applied."""
    from gridtune.grids.recipe import recipe_for

    ref = spec.grid_refs()[label]
    manifest = dataset_manifest(ref)
    if manifest is not None:  # a built dataset is used as it is: no overrides
        table = dict(manifest["recipe"])
        if spec.data.samples is not None:
            table["samples"] = min(spec.data.samples, int(manifest["samples"]))
        return table
    recipe = recipe_for(ref, samples=spec.data.samples)
    return _merge(recipe.to_dict(), spec.data.overrides)


def check_study(spec: StudySpec, where: str = "study") -> None:
    """Checks that need the strategy / constraint registries: strategy and formulation names
    exist, every constraint set applies to the study's task. Runs before any work."""
    from gridtune.finetune.registry import strategy_names

    valid = strategy_names()
    for name in spec.strategies:
        if name not in valid:
            raise SpecError(f"{where}: key `strategies` names unknown strategy `{name}`; valid: "
                            f"{choices_text(valid)}")
    if not spec.constraints:
        return
    from gridtune.constraints.formulations import FORMULATIONS
    from gridtune.constraints.spec import load_constraint_set

    for name in spec.formulations:
        if name not in FORMULATIONS:
            raise SpecError(f"{where}: key `formulations` names unknown formulation `{name}`; "
                            f"valid: {choices_text(FORMULATIONS)}")
    for ref in spec.constraints:
        try:
            load_constraint_set(spec.constraint_path(ref), spec.task)
        except SpecError as exc:
            raise SpecError(f"{where}: key `constraints`: {exc}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line (`--set data.samples=100`); VALUE is a TOML value."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set `{text}`: expected KEY=VALUE, e.g. `seeds=[0, 1]`")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word is a string: --set task=opf
    return key.strip(), parsed
