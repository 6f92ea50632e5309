"""A validated study spec, resolved once into what the runner executes: a `StudyPlan`.

    plan = make_plan(load_study("quickstart"))
    print(plan.describe())                # `gridtune study plan quickstart`
    outcome = run_plan(plan, "runs/quickstart")

The plan holds
- the datasets to build or reuse, each with its fully resolved recipe table (data overrides and
  `data.samples` applied) and its cache directory;
- one pre-training job per source: its `PretrainConfig` and fingerprint;
- every cell (source, target, strategy, labels, seed, constraint, formulation): its
  `TransferConfig` and fingerprint.

The spec is mapped onto the workflow configs here and nowhere else (`pretrain_config`,
`transfer_config`). Fingerprints hash everything the spec decides about a result (config,
constraint file contents, recipe tables, the source's pre-training fingerprint); the runner binds
them to the content hashes of the datasets it built (`bind`), so a rebuilt dataset with other
content makes its cells stale too.

Transfer gain compares a cell with training from scratch at the same target, labels, seed,
constraint and formulation. Scratch does not depend on the source or the strategy, so only one
cell per such group (the first in spec order, `with_scratch=True`) also trains the scratch
baseline; the others borrow it when the results table is made (`store.results_frame`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from gridtune.errors import GridtuneError, SpecError
from gridtune.files import json_digest
from gridtune.specs import from_table
from gridtune.studies.spec import (
    StudySpec,
    formulation_of,
    formulation_overrides,
    is_dataset_directory,
)

NONE = "none"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One fine-tuning run of a study.

    Attributes:
        source, target: grid labels (case name, recipe stem or built dataset's grid name).
        strategy: fine-tuning strategy name.
        labels: number of labelled target scenarios.
        seed: fine-tuning seed (split, label draw, initialisation, shuffling).
        constraint: constraint set label, or ``"none"``.
        formulation: constraint formulation, or ``"none"``.
        constraint_path: path of the constraint spec (None when unconstrained).
        with_scratch: whether this cell also trains the scratch baseline of its group.
    """

    source: str
    target: str
    strategy: str
    labels: int
    seed: int
    constraint: str = NONE
    formulation: str = NONE
    constraint_path: str | None = None
    with_scratch: bool = False

    @property
    def cell_id(self) -> str:
        """A readable, filesystem-safe, unique id."""
        parts = [self.source, self.target, self.strategy, f"n{self.labels}", f"s{self.seed}",
                 self.constraint, self.formulation]
        return "__".join(_safe(p) for p in parts)

    @property
    def scratch_group(self) -> tuple[str, int, int, str, str]:
        return (self.target, self.labels, self.seed, self.constraint, self.formulation)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    """A source or target dataset: built from `recipe` into `directory`, or (`prebuilt`) a built
    dataset directory used as it is, first `samples` scenarios."""

    label: str
    ref: str
    recipe: dict[str, Any]
    directory: str
    samples: int
    prebuilt: bool


@dataclasses.dataclass(frozen=True)
class PretrainPlan:
    """Pre-training on one source, into `<study>/pretrain/<source>`."""

    source: str
    config: Any  # gridtune.workflows.configs.PretrainConfig
    fingerprint: str
    members: tuple[str, ...] = ()  # grid labels pre-trained on: (source,), or a source set's

    def __post_init__(self) -> None:
        if not self.members:
            object.__setattr__(self, "members", (self.source,))


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """One cell with the `TransferConfig` it runs and its fingerprint."""

    cell: Cell
    config: Any  # gridtune.workflows.configs.TransferConfig
    fingerprint: str

    @property
    def cell_id(self) -> str:
        return self.cell.cell_id


@dataclasses.dataclass(frozen=True)
class FederatedPlan:
    """One federated cell: a `[[federated]]` entry's spec run for one seed, into
    `<study>/cells/<cell_id>/` (`gridtune.studies.federated_cells`)."""

    name: str
    seed: int
    spec: Any  # gridtune.federated.spec.FederatedSpec, its seeds = (seed,)
    fingerprint: str

    @property
    def cell_id(self) -> str:
        return f"federated__{_safe(self.name)}__s{self.seed}"


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """Everything the runner needs; nothing in it refers back to the spec module.

    `report_sets` are the (label, path) of every constraint set of the study (trained on or
    only reported): each cell reports its test-split violations of all of them.
    """

    name: str
    task: str
    headline: tuple[str, bool]
    spec: dict[str, Any]
    datasets: tuple[DatasetPlan, ...]
    pretrain: tuple[PretrainPlan, ...]
    cells: tuple[CellPlan, ...]
    report_sets: tuple[tuple[str, str], ...] = ()
    federated: tuple[FederatedPlan, ...] = ()

    def dataset(self, label: str) -> DatasetPlan:
        return next(d for d in self.datasets if d.label == label)

    def pretrain_for(self, source: str) -> PretrainPlan:
        return next(p for p in self.pretrain if p.source == source)

    @property
    def cell_ids(self) -> list[str]:
        return [c.cell_id for c in self.cells]

    def to_dict(self) -> dict[str, Any]:
        """What `study.json` records: the spec, the resolved recipes and configs, the cells."""
        return {
            "spec": self.spec, "task": self.task, "headline": list(self.headline),
            "recipes": {d.label: d.recipe for d in self.datasets},
            "pretrain": {p.source: {"config": dataclasses.asdict(p.config), "members": list(p.members),
                                    "fingerprint": p.fingerprint} for p in self.pretrain},
            "report_constraints": {label: path for label, path in self.report_sets},
            "cells": self.cell_ids,
            "cell_configs": {c.cell_id: _config_dict(c.config) for c in self.cells},
            "federated_cells": {f.cell_id: {"name": f.name, "seed": f.seed, "fingerprint": f.fingerprint,
                                            "spec": _federated_table(f.spec)} for f in self.federated},
        }

    def describe(self) -> str:
        """The plan as text (`gridtune study plan`): datasets, pre-training, cells."""
        metric, higher = self.headline
        lines = [f"study `{self.name}`: task {self.task}, headline {metric} "
                 f"({'higher' if higher else 'lower'} is better)", "",
                 f"datasets ({len(self.datasets)}):"]
        for d in self.datasets:
            state = ("built dataset, used as it is" if d.prebuilt else
                     "cached" if is_dataset_directory(d.directory) else "to build")
            lines.append(f"  {d.label:<16} {d.samples} scenarios, {state}: {d.directory}")
        lines += ["", f"pre-training, once per source ({len(self.pretrain)}):"]
        for p in self.pretrain:
            t, m = p.config.train, p.config.model
            across = f" (one model across {', '.join(p.members)})" if p.members != (p.source,) else ""
            lines.append(f"  {p.source:<16} {t.epochs} epochs, lr {t.lr:g}"
                         f"{', ' + t.lr_schedule if t.lr_schedule else ''}, {m.conv} "
                         f"{m.hidden}x{m.layers}, seed {t.seed}{across}  [{p.fingerprint}]")
        scratch = sum(c.cell.with_scratch for c in self.cells)
        lines += ["", f"cells ({len(self.cells)}; {scratch} also train the scratch baseline of "
                  "their group):"]
        for c in self.cells:
            cfg = c.config
            extra = [f"unlabeled {cfg.unlabeled}"] if cfg.unlabeled else []
            if c.cell.with_scratch:
                extra.append("+ scratch")
            lines.append(f"  {c.cell_id}  [{c.fingerprint}]"
                         + (f"  ({', '.join(extra)})" if extra else ""))
        if self.cells:
            t = self.cells[0].config.train
            lines += ["", f"fine-tuning: at most {t.epochs} epochs, patience {t.patience}, lr "
                      f"{t.lr:g}{', ' + t.lr_schedule if t.lr_schedule else ''}, normalizer "
                      f"{self.cells[0].config.normalizer}"]
        if self.report_sets:
            lines.append("violations reported on every cell: "
                         + ", ".join(label for label, _ in self.report_sets))
        if self.federated:
            lines += ["", f"federated cells ({len(self.federated)}; one per entry and seed):"]
            for f in self.federated:
                sites = ", ".join(_site_label(s) for s in f.spec.sites)
                lines.append(f"  {f.cell_id}  [{f.fingerprint}]  ({len(f.spec.sites)} sites: {sites}; "
                             f"{f.spec.strategy}, {f.spec.rounds} rounds, privacy {f.spec.privacy.kind})")
        return "\n".join(lines)


# ---- resolution --------------------------------------------------------------------------------

def make_plan(spec: StudySpec) -> StudyPlan:
    """Resolve a validated spec (`load_study`) once: recipes, configs, cells, fingerprints.

    Raises `SpecError` (naming the key) for what only resolution can tell: a data override that
    makes an invalid recipe, two grids with one name, a setting the workflow configs refuse.
    """
    where = f"study `{spec.name}`"
    refs = grid_refs(spec)
    datasets = tuple(_dataset_plan(spec, label, ref, where) for label, ref in refs.items())
    by_label = {d.label: d for d in datasets}
    report_sets = _report_sets(spec, where)
    cells = expand(spec)
    members = source_labels(spec)
    pconfig = pretrain_config(spec)
    pretrain = {}
    for s in dict.fromkeys(c.source for c in cells):
        grids = members[s]
        recipe: Any = (by_label[s].recipe if grids == (s,)
                       else [by_label[m].recipe for m in grids])
        pretrain[s] = PretrainPlan(s, pconfig, _hash({
            "task": spec.task, "config": _pretrain_dict(pconfig), "source_recipe": recipe}), grids)
    cell_plans = []
    for cell in cells:
        try:
            config = transfer_config(spec, cell, report_sets)
        except (GridtuneError, ValueError) as exc:
            raise SpecError(f"{where} [finetune], cell `{cell.cell_id}`: {exc}") from None
        cell_plans.append(CellPlan(cell, config, _hash({
            "cell": {k: v for k, v in cell.to_dict().items() if k != "constraint_path"},
            "task": spec.task, "config": _config_dict(config, hashed=True),
            "pretrain": pretrain[cell.source].fingerprint,
            "target_recipe": by_label[cell.target].recipe})))
    return StudyPlan(spec.name, spec.task, spec.headline, spec.to_dict(), datasets,
                     tuple(pretrain.values()), tuple(cell_plans), report_sets,
                     federated_plans(spec, where))


def federated_plans(spec: StudySpec, where: str) -> tuple[FederatedPlan, ...]:
    """One `FederatedPlan` per `[[federated]]` entry and seed; the fingerprint hashes the spec as
    run (the runner binds it to the sites' data, `bind`). Every region site is checked against
    its grid."""
    from gridtune.federated.sites import RegionSite, region_recipe
    from gridtune.studies.spec import federated_specs

    out = []
    for name, fed in federated_specs(spec, where).items():
        for site in fed.sites:  # a region the grid lacks is refused here, before any work
            if isinstance(site, RegionSite):
                try:
                    region_recipe(site, fed.samples)
                except SpecError as exc:
                    raise SpecError(f"{where} [[federated]] `{name}`: {exc}") from None
        for seed in spec.seeds:
            one = dataclasses.replace(fed, seeds=(seed,))
            out.append(FederatedPlan(name, seed, one, _hash({"federated": _federated_table(one)})))
    return tuple(out)


def _federated_table(spec: Any) -> dict[str, Any]:
    from gridtune.specs import to_table

    return to_table(spec)


def _site_label(site: Any) -> str:
    from gridtune.federated.sites import site_name

    return site_name(site)


def pretrain_config(spec: StudySpec) -> Any:
    """The spec's `[pretrain]` and `[model]` tables as a `PretrainConfig`."""
    from gridtune.nn.model import ModelConfig
    from gridtune.workflows.configs import PretrainConfig

    p = spec.pretrain
    model = from_table(ModelConfig, {**p.model_fields(), **spec.model}, where="[model]")
    fields: dict[str, Any] = {"task": spec.task, "model": model,
                              "train": _train_config(p, seed=p.seed, where="[pretrain]"),
                              "samples": p.samples, "include_unknown": p.include_unknown,
                              "self_supervised_epochs": p.self_supervised_epochs, "unlabeled": p.unlabeled}
    if p.split is not None:
        fields["split"] = p.split
    try:
        return PretrainConfig(**fields)
    except (GridtuneError, ValueError) as exc:
        raise SpecError(f"[pretrain]: {exc}") from None


def transfer_config(spec: StudySpec, cell: Cell, report_sets: tuple[tuple[str, str], ...] = ()
                    ) -> Any:
    """The spec's `[finetune]` table and `unlabeled` for one cell, as a `TransferConfig`.

    Unlabelled target scenarios are drawn only for cells that use them (a strategy that needs
    them, pre-adaptation, the target normaliser, a constraint term); other cells would draw and
    ignore them, with the same result.
    """
    from gridtune.core.registry import strategy_class
    from gridtune.workflows.configs import TransferConfig

    f = spec.finetune
    constrained = cell.constraint_path is not None
    uses_unlabeled = (strategy_class(cell.strategy).needs_unlabeled or f.pre_adapt_epochs > 0
                      or f.normalizer == "target" or constrained)
    extra = {} if f.split is None else {"split": f.split}
    return TransferConfig(
        **extra, labels=cell.labels, strategy=cell.strategy, seed=cell.seed,
        unlabeled=spec.unlabeled if uses_unlabeled else 0,
        constraints=cell.constraint_path,
        formulation=formulation_of(spec, cell.formulation) if constrained else "lagrangian",
        with_scratch=cell.with_scratch, pre_adapt_epochs=f.pre_adapt_epochs,
        normalizer=f.normalizer, train=_train_config(f, seed=cell.seed, where="[finetune]"),
        report_constraints=tuple(path for _, path in report_sets),
        conformal_alpha=f.conformal_alpha if spec.task == "feasibility" else None)


def _train_config(table: Any, *, seed: int, where: str) -> Any:
    from gridtune.core.trainer import TrainConfig

    fields = {k: getattr(table, k) for k in ("epochs", "lr", "weight_decay", "batch_size",
                                             "patience", "lr_schedule")}
    if table.grad_clip_norm is not None:
        fields["grad_clip_norm"] = table.grad_clip_norm
    try:
        return TrainConfig(seed=seed, **fields)
    except (GridtuneError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from None


def _pretrain_dict(config: Any) -> dict[str, Any]:
    """A PretrainConfig as hashed: without self-supervision its keys stay out, so plans made
    before those keys existed keep their fingerprints."""
    out = dataclasses.asdict(config)
    if not out.get("self_supervised_epochs"):
        out.pop("self_supervised_epochs", None)
        out.pop("unlabeled", None)
    return out


def _config_dict(config: Any, hashed: bool = False) -> dict[str, Any]:
    """A TransferConfig as a dict; `hashed` replaces constraint paths by their contents' hash
    (a moved file is the same constraint, an edited one is not)."""
    out = dataclasses.asdict(config)
    if out.get("conformal_alpha") is None:
        out.pop("conformal_alpha", None)  # cells without it keep the fingerprints they always had
    # the runner binds replay cells to the source's dataset directories (`replay_sources`); the
    # fingerprint already holds the source's content hash
    out.pop("source_data", None)
    out.pop("source_samples", None)
    if hashed:
        if out.get("constraints"):
            out["constraints"] = _file_hash(out["constraints"])
        out["report_constraints"] = [_file_hash(p) for p in out.get("report_constraints") or ()]
    else:
        out["report_constraints"] = list(out.get("report_constraints") or ())
    return out


def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hash(payload: Any) -> str:
    return json_digest(payload)[:16]


def bind(fingerprint: str, *content_hashes: str) -> str:
    """A plan fingerprint bound to the content of the datasets it ran on."""
    return _hash([fingerprint, *content_hashes])


def _report_sets(spec: StudySpec, where: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for ref in spec.constraints + spec.report_constraints:
        path, label = str(spec.constraint_path(ref)), constraint_label(ref)
        if out.get(label, path) != path:
            raise SpecError(f"{where}: constraint sets `{out[label]}` and `{path}` share the name "
                            f"`{label}`; rename one file")
        out[label] = path
    return tuple(out.items())


# ---- constraint sets with formulation settings ------------------------------------------------

def constraint_variant(spec: StudySpec, ref: str, name: str) -> str:
    """The constraint spec a cell with `formulations` entry `name` trains on: the set itself, or,
    for a `[formulation_settings]` variant, a copy whose `[formulation.<f>]` table carries the
    variant's settings (written once into the cache, named by its content)."""
    path = spec.constraint_path(ref)
    settings = formulation_overrides(spec, name)
    if not settings:
        return str(path)
    from gridtune.constraints.api import training_term
    from gridtune.files import atomic_write_text
    from gridtune.grids.cases import cache_root

    formulation = formulation_of(spec, name)
    text = _with_formulation_settings(path, formulation, settings, name)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    out = cache_root() / "studies" / "constraints" / f"{path.stem}-{_safe(name)}-{digest}.toml"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    try:
        training_term(out, spec.task, formulation)  # settings the formulation does not take
    except SpecError as exc:
        raise SpecError(f"key `formulation_settings.{name}`: {exc}") from None
    return str(out)


def _with_formulation_settings(path: Path, formulation: str, settings: dict[str, Any],
                               name: str) -> str:
    import tomllib

    from gridtune.specs import read_toml

    if read_toml(path).get("plugins"):
        raise SpecError(f"key `formulation_settings.{name}`: constraint set `{path}` loads "
                        "plugins by relative path; set the formulation settings in a copy of it")
    lines = path.read_text().splitlines()
    header = re.compile(rf'^\s*\[\s*formulation\s*\.\s*"?{re.escape(formulation)}"?\s*\]\s*(#.*)?$')
    at = next((i for i, line in enumerate(lines) if header.match(line)), None)
    added = [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    if at is None:
        lines += ["", f'[formulation."{formulation}"]', *added]
    else:
        end = next((j for j in range(at + 1, len(lines)) if lines[j].lstrip().startswith("[")),
                   len(lines))
        kept = [line for line in lines[at + 1:end] if line.split("=")[0].strip() not in settings]
        lines[at + 1:end] = added + kept
    text = "\n".join(lines) + "\n"
    try:
        table = tomllib.loads(text).get("formulation", {}).get(formulation, {})
    except tomllib.TOMLDecodeError:
        table = {}
    if any(table.get(k) != v for k, v in settings.items()):
        raise SpecError(f"key `formulation_settings.{name}`: cannot set {sorted(settings)} in "
                        f"`[formulation.{formulation}]` of `{path}`; set them in a copy of it")
    return text


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise SpecError(f"formulation setting value `{v!r}` is not a TOML value")


# ---- grids and recipes -------------------------------------------------------------------------

def grid_label(ref: str) -> str:
    """Short name of a resolved source / target: the case name, the recipe file's stem, or the
    grid name of a built dataset directory."""
    if is_dataset_directory(ref):
        from gridtune.grids.storage import load_manifest

        return str(load_manifest(ref)["grid"]["name"])
    return Path(ref).stem if ref.endswith(".toml") else ref


def constraint_label(ref: str) -> str:
    return Path(ref).stem


def grid_refs(spec: StudySpec) -> dict[str, str]:
    """Grid label -> resolved recipe reference, sources first, in spec order; two references
    with one label are an error."""
    out: dict[str, str] = {}
    for ref in [m for src in spec.sources for m in spec.source_members(src)] + list(spec.targets):
        resolved = spec.resolve(ref)
        label = grid_label(resolved)
        if out.setdefault(label, resolved) != resolved:
            raise SpecError(f"study `{spec.name}`: grids `{out[label]}` and `{resolved}` share "
                            f"the name `{label}`; rename one recipe file")
    return out


def source_labels(spec: StudySpec) -> dict[str, tuple[str, ...]]:
    """Source label -> the grid labels it pre-trains on: `(label,)` for one grid, the members'
    labels for a `[source_sets]` entry (labelled by the set's name)."""
    out = {}
    for ref in spec.sources:
        if ref in spec.source_sets:
            out[ref] = tuple(grid_label(spec.resolve(m)) for m in spec.source_sets[ref])
        else:
            label = grid_label(spec.resolve(ref))
            out[label] = (label,)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_table(spec: StudySpec, ref: str) -> dict[str, Any]:
    """The full recipe (as a table) of resolved reference `ref` in this study: data overrides
    and `data.samples` applied; a built dataset's own recipe (samples capped by `data.samples`)."""
    from gridtune.grids.recipe import recipe_for

    if is_dataset_directory(ref):  # a built dataset is used as it is: no overrides
        from gridtune.grids.storage import load_manifest

        manifest = load_manifest(ref)
        if manifest.get("recipe") is None:  # imported (e.g. OPFData), not built from a recipe
            raise SpecError(f"dataset `{ref}` was imported, not built from a recipe; a study needs "
                            "a recipe or a dataset built from one")
        table = dict(manifest["recipe"])
        table["samples"] = int(manifest["samples"])
        if spec.data.samples is not None:
            table["samples"] = min(spec.data.samples, int(manifest["samples"]))
        return table
    recipe = recipe_for(ref, samples=spec.data.samples)
    return _merge(recipe.to_dict(), spec.data.overrides)


def _dataset_plan(spec: StudySpec, label: str, ref: str, where: str) -> DatasetPlan:
    table = recipe_table(spec, ref)
    if is_dataset_directory(ref):
        return DatasetPlan(label, ref, table, ref, int(table["samples"]), prebuilt=True)
    from gridtune.grids.build import default_directory
    from gridtune.grids.recipe import Recipe

    what = "[data.overrides]" if spec.data.overrides else "recipe"
    recipe = from_table(Recipe, table, where=f"{where} {what} on `{label}`")
    return DatasetPlan(label, ref, table, str(default_directory(recipe)), recipe.samples,
                       prebuilt=False)


# ---- cells -------------------------------------------------------------------------------------

def expand(spec: StudySpec) -> list[Cell]:
    """Every cell of a study, in a stable order (source, target, constraint, labels, seed,
    strategy); the first strategy of each scratch group carries its scratch baseline (none with
    `[finetune] with_scratch = false`)."""
    constraint_options: list[tuple[str, str, str | None]] = []
    if spec.unconstrained:
        constraint_options.append((NONE, NONE, None))
    for ref in spec.constraints:
        for form in spec.formulations:
            constraint_options.append((constraint_label(ref), form,
                                       constraint_variant(spec, ref, form)))
    members = source_labels(spec)
    cells: list[Cell] = []
    seen_groups: set[tuple[str, int, int, str, str]] = set()
    for source, grids in members.items():
        for target_ref in spec.targets:
            target = grid_label(spec.resolve(target_ref))
            if spec.pairs == "cross" and target in grids:
                continue
            for constraint, form, cpath in constraint_options:
                for n in spec.labels:
                    for seed in spec.seeds:
                        for strategy in spec.strategies:
                            group = (target, n, seed, constraint, form)
                            carrier = spec.finetune.with_scratch and group not in seen_groups
                            seen_groups.add(group)
                            cells.append(Cell(source, target, strategy, n, seed, constraint,
                                              form, cpath, with_scratch=carrier))
    return cells
