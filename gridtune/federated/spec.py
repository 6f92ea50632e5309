"""The federated spec: a TOML file read once into frozen dataclasses (`gridtune.specs.from_table`).

    sites = ["case9", "case14", "runs/data/case30_changed"]   # recipes, case names or dataset dirs
    # or regions of one grid: sites = [{grid = "case30", zone = 1}, {grid = "case30", zone = 2}]
    samples = 300           # scenarios per site (default: all)
    seeds = [0, 1, 2]
    split = [0.5, 0.2, 0.3] # train / validation / test of each site, stratified by status
    mode = "simulation"     # or "loopback": a server and one process per site on 127.0.0.1
    strategy = "fedavg"     # `fedavg`, `fedprox` or `reptile`
    rounds = 10
    local_epochs = 1
    init = "runs/public"    # optional: start from a checkpoint pre-trained on data no site holds
    shared = "head"         # with init: the rounds train and release the head alone
    [model]                 # gridtune.nn.model.ModelConfig (with init: the checkpoint's)
    [train]                 # lr, batch_size of local training
    [personalise]           # methods, epochs, local-only baseline epochs
    [privacy]               # kind = "none" | "record" | "client", epsilon, delta, ...
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from gridtune.errors import SpecError, choices_text
from gridtune.nn.model import ModelConfig

STRATEGIES = ("fedavg", "fedprox", "reptile")
MODES = ("simulation", "loopback")
FAILURE_POLICIES = ("drop", "retry")
PERSONALISATION = ("finetune", "head", "adapter")
PRIVACY_KINDS = ("none", "record", "client")
SHARED = ("all", "head")


@dataclasses.dataclass(frozen=True)
class RegionSite:
    """A site that is one region of a grid: the grid's scenarios in which only the region's loads
    vary, every other load at its nominal value (`gridtune.grids.regions`).

    Attributes:
        grid: a recipe `.toml` or a shipped case / recipe name (the region's scenarios are drawn
            from it: a built dataset directory cannot be re-drawn).
        zone: the region as a bus zone (pandapower `bus.zone`; MATPOWER's `BUS_AREA`).
        buses: or the region as bus indices (pandapower's, as in a recipe's `[changes]`).
        name: the site's name (default: `<grid>-zone<zone>`, or `<grid>-buses-<b1>-<b2>...`).
    """

    grid: str
    zone: int | str | None = None
    buses: tuple[int, ...] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.zone is None) == (self.buses is None):
            raise SpecError(f"site `{self.grid}`: name its region with exactly one of `zone` and `buses`")
        if self.buses is not None and not self.buses:
            raise SpecError(f"site `{self.grid}`: key `buses` is empty; list the region's buses")
        if self.name is not None and (not self.name.strip() or any(c in self.name for c in "/\\")):
            raise SpecError(f"site name `{self.name}` must be non-empty, without slashes")

    @property
    def site_name(self) -> str:
        if self.name is not None:
            return self.name
        stem = Path(self.grid).stem
        if self.zone is not None:
            return f"{stem}-zone{self.zone}"
        return f"{stem}-buses-" + "-".join(str(b) for b in self.buses or ())


Source = str | RegionSite
"""A site's data: a recipe, case name or dataset directory, or a region of a grid."""


ROUND_OPTIMIZERS = ("adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class LocalTraining:
    """Optimisation on a site (federated rounds, personalisation and the local-only baseline).

    Attributes:
        lr: learning rate of AdamW (under DP-SGD it steps on the privatised gradients) (default: 3e-3).
        batch_size: graphs per step; under record-level DP the expected batch of Poisson
            sampling (default: 32).
        round_optimizer: the optimizer of a site's steps in the federated rounds: `adamw`
            (default) or `sgd` (with `momentum`). Personalisation and local-only training keep
            AdamW at `lr`. What each gives under record-level DP: docs/federated.md.
        round_lr: learning rate of those steps (default: `lr`).
        momentum: SGD momentum (default: 0.9; only with `round_optimizer = "sgd"`).
    """

    lr: float = 3e-3
    batch_size: int = 32
    round_optimizer: str | None = None
    round_lr: float | None = None
    momentum: float | None = None

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"[train] lr must be a positive number, got `{self.lr}`")
        if self.batch_size < 1:
            raise SpecError(f"[train] batch_size must be a positive integer, got `{self.batch_size}`")
        if self.round_optimizer not in (None, *ROUND_OPTIMIZERS):
            raise SpecError(f"[train] round_optimizer `{self.round_optimizer}` is unknown; valid: "
                            f"{choices_text(ROUND_OPTIMIZERS)}")
        if self.round_lr is not None and not (self.round_lr > 0 and math.isfinite(self.round_lr)):
            raise SpecError(f"[train] round_lr must be a positive number, got `{self.round_lr}`")
        if self.momentum is not None:
            if self.round_optimizer != "sgd":
                raise SpecError("[train] momentum is for round_optimizer = \"sgd\"; set it or drop momentum")
            if not 0 <= self.momentum < 1:
                raise SpecError(f"[train] momentum must lie in [0, 1), got `{self.momentum}`")

    def round_optimizer_for(self, params: list[Any]) -> Any:
        """The optimizer of a site's steps in a federated round."""
        import torch

        lr = self.round_lr if self.round_lr is not None else self.lr
        if self.round_optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9 if self.momentum is None else self.momentum)
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


@dataclasses.dataclass(frozen=True)
class Personalisation:
    """What each site does with the global model after the federated rounds.

    Attributes:
        methods: any of `finetune` (every weight, strategy `full`), `head` (a new head per site on
            the frozen shared encoder, strategy `head-swap`), `adapter` (bottleneck adapters per
            site, strategy `adapter`) (default: all three).
        epochs: maximum epochs of each personalisation, early stopping on the site's validation
            split (default: 30).
        patience: early-stopping patience in epochs (default: 8).
        local_epochs: maximum epochs of the local-only baseline (a model trained on the site's
            own data alone) (default: 60).
    """

    methods: tuple[str, ...] = PERSONALISATION
    epochs: int = 30
    patience: int = 8
    local_epochs: int = 60

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in PERSONALISATION]
        if bad:
            raise SpecError(f"[personalise] unknown method `{bad[0]}`; valid: {choices_text(PERSONALISATION)}")
        for name in ("epochs", "patience", "local_epochs"):
            if getattr(self, name) < 1:
                raise SpecError(f"[personalise] {name} must be a positive integer, got `{getattr(self, name)}`")


@dataclasses.dataclass(frozen=True)
class Privacy:
    """Differential privacy of the released global model.

    Attributes:
        kind: `none`; `record` (DP-SGD on every site: each graph's gradient clipped to
            `clip_norm`, Gaussian noise of `noise_multiplier * clip_norm` on each step's sum;
            Abadi et al. 2016); `client` (each site's whole update clipped to `clip_norm` and
            Gaussian noise added to their sum at the server; McMahan et al. 2018, DP-FedAvg).
        epsilon: the budget at `delta`; when `noise_multiplier` is not given, the smallest
            noise multiplier that keeps the accountant's epsilon within it is used.
        delta: the delta of (epsilon, delta)-DP, in (0, 1) (default: 1e-5).
        noise_multiplier: fixed noise (std / clip_norm); it must reach `epsilon`, or the run
            stops before training.
        clip_norm: L2 bound of a graph's gradient (`record`) or of a site's update (`client`)
            (default: 1.0).
    """

    kind: str = "none"
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PRIVACY_KINDS:
            raise SpecError(f"[privacy] kind `{self.kind}` is unknown; valid: {choices_text(PRIVACY_KINDS)}")
        if self.kind == "none":
            if self.epsilon is not None or self.noise_multiplier is not None:
                raise SpecError("[privacy] epsilon / noise_multiplier are given but kind is `none`; "
                                "set kind to `record` or `client`")
            return
        if self.epsilon is None or not (0 < self.epsilon < math.inf):
            raise SpecError(f"[privacy] epsilon must be a positive finite number, got `{self.epsilon}`")
        if not 0 < self.delta < 1:
            raise SpecError(f"[privacy] delta must lie in (0, 1), got `{self.delta}`")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise SpecError(f"[privacy] noise_multiplier must be > 0, got `{self.noise_multiplier}`")
        if not self.clip_norm > 0:
            raise SpecError(f"[privacy] clip_norm must be > 0, got `{self.clip_norm}`")


@dataclasses.dataclass(frozen=True)
class FederatedSpec:
    """A federated run: sites, rounds, strategy, local training, personalisation, privacy.

    Attributes:
        sites: at least two data sources (recipe `.toml`, shipped case name such as `case30_changed`,
            or a built dataset directory), one per site, or regions of a grid (a table, `RegionSite`:
            `{grid = "case30", zone = 1}`); relative paths are relative to the spec.
        samples: scenarios per site (default: all of a directory; a recipe's own count).
        seeds: one run per seed (default: [0]); a seed fixes splits, weights, batches and noise.
        split: train / validation / test fractions of every site (default: 0.6, 0.2, 0.2).
        mode: `simulation` (Flower's in-process simulation) or `loopback` (a Flower server and one
            client process per site on 127.0.0.1) (default: `simulation`).
        strategy: `fedavg`, `fedprox` (proximal term `proximal_mu`) or `reptile` (server step
            `meta_lr` towards the mean of the sites' models) (default: `fedavg`).
        rounds: federated rounds (default: 10).
        local_epochs: epochs on each site per round (default: 1).
        proximal_mu: FedProx's proximal weight (default: 0.01).
        meta_lr: Reptile's server step size (1.0 is FedAvg) (default: 1.0).
        on_client_failure: `drop` (the round aggregates the sites that answered; the failed site
            is reported and takes no further part) or `retry` (loopback: its process is
            restarted and it rejoins from the next round) (default: `drop`).
        round_timeout_s: a round waits at most this long for a site (default: 300).
        min_sites: a round with fewer answering sites fails the run (default: 1).
        init: a feasibility checkpoint pre-trained on data no site holds (`gridtune pretrain` on
            other grids): every site starts from its weights and its input normaliser, and its
            model config is the run's (a `[model]` table must then match it) (default: none; the
            run's seed draws the initial weights and each site fits its own normaliser).
        shared: the parameters the rounds train, exchange and release: `all`, or `head` (the
            encoder stays the checkpoint's, so no site's data reach it before personalisation;
            needs `init`) (default: `all`).
    """

    sites: tuple[str | RegionSite | dict[str, Any], ...]
    samples: int | None = None
    seeds: tuple[int, ...] = (0,)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    mode: str = "simulation"
    strategy: str = "fedavg"
    rounds: int = 10
    local_epochs: int = 1
    proximal_mu: float = 0.01
    meta_lr: float = 1.0
    on_client_failure: str = "drop"
    round_timeout_s: float = 300.0
    min_sites: int = 1
    model: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig(hidden=32, layers=2,
                                                                               head_hidden=32))
    train: LocalTraining = dataclasses.field(default_factory=LocalTraining)
    personalise: Personalisation = dataclasses.field(default_factory=Personalisation)
    privacy: Privacy = dataclasses.field(default_factory=Privacy)
    init: str | None = None
    shared: str | None = None

    def __post_init__(self) -> None:
        from gridtune.grids.split import parse_split
        from gridtune.specs import from_table

        object.__setattr__(self, "sites", tuple(
            from_table(RegionSite, s, where=f"site {i + 1}") if isinstance(s, dict) else s
            for i, s in enumerate(self.sites)))
        if len(self.sites) < 2:
            raise SpecError(f"a federated run needs at least 2 sites, got {len(self.sites)}: "
                            f"`{list(self.sites)}`")
        if len(set(self.sites)) != len(self.sites):
            raise SpecError(f"site `{next(s for s in self.sites if self.sites.count(s) > 1)}` is listed twice")
        if self.samples is not None and self.samples < 10:
            raise SpecError(f"samples must be at least 10, got `{self.samples}`")
        if not self.seeds:
            raise SpecError("seeds must list at least one seed")
        object.__setattr__(self, "split", parse_split(self.split))
        for name, valid in (("mode", MODES), ("strategy", STRATEGIES), ("on_client_failure", FAILURE_POLICIES)):
            if getattr(self, name) not in valid:
                raise SpecError(f"{name} `{getattr(self, name)}` is unknown; valid: {choices_text(valid)}")
        for name in ("rounds", "local_epochs", "min_sites"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be a positive integer, got `{getattr(self, name)}`")
        if self.proximal_mu < 0 or not 0 < self.meta_lr <= 2:
            raise SpecError(f"proximal_mu must be >= 0 and meta_lr in (0, 2], got `{self.proximal_mu}`, "
                            f"`{self.meta_lr}`")
        if not self.round_timeout_s > 0:
            raise SpecError(f"round_timeout_s must be > 0, got `{self.round_timeout_s}`")
        if self.min_sites > len(self.sites):
            raise SpecError(f"min_sites `{self.min_sites}` exceeds the {len(self.sites)} sites")
        if self.shared not in (None, *SHARED):
            raise SpecError(f"shared `{self.shared}` is unknown; valid: {choices_text(SHARED)}")
        if self.shared == "head" and self.init is None:
            raise SpecError('shared = "head" trains a head on a pre-trained encoder: set `init` to a checkpoint '
                            "pre-trained on data no site holds (gridtune pretrain)")
        if self.init is not None:
            object.__setattr__(self, "model", init_model_config(self.init))

    @property
    def shares(self) -> str:
        """What the rounds exchange: `all` or `head` (`shared`, default `all`)."""
        return self.shared or "all"


def init_model_config(checkpoint: str) -> ModelConfig:
    """The model config of the run's `init` checkpoint, which must be a feasibility model on this
    gridtune's feature schema."""
    from gridtune.errors import CheckpointError
    from gridtune.grids.features import SCHEMA_VERSION
    from gridtune.nn.checkpoint import model_config, read_config

    try:
        config = read_config(checkpoint)
    except CheckpointError as exc:
        raise SpecError(f"init: {exc}") from None
    if config["task"] != "feasibility":
        raise SpecError(f"init: checkpoint `{checkpoint}` is for task `{config['task']}`; a federated run "
                        "trains `feasibility`")
    if str(config["schema_version"]) != SCHEMA_VERSION:
        raise SpecError(f"init: checkpoint `{checkpoint}` uses feature schema `v{config['schema_version']}`, "
                        f"the sites use `v{SCHEMA_VERSION}`; pre-train it again on current data")
    return model_config(config, f"init `{checkpoint}` [model]")


def load_spec(path: str | Path, **overrides: Any) -> FederatedSpec:
    """Read a federated spec; relative site paths resolve against the spec's directory."""
    from gridtune.specs import read_toml

    path = Path(path)
    return spec_from_table(read_toml(path), path.parent, where=str(path), **overrides)


def spec_from_table(table: dict[str, Any], base_dir: str | Path, *, where: str, **overrides: Any
                    ) -> FederatedSpec:
    """A federated spec from a TOML table (a file's, or one inlined in a study); relative site
    paths in `table` resolve against `base_dir`, those in `overrides` are taken as given."""
    from gridtune.specs import from_table, to_table

    table = {**resolve_site_paths(table, base_dir), **overrides}
    spec = from_table(FederatedSpec, table, where=where)
    if spec.init is not None and "model" in table:  # the keys it gives must agree with the checkpoint
        given = from_table(ModelConfig, {**to_table(spec.model), **table["model"]}, where=f"{where} [model]")
        if given != spec.model:
            diff = [f"{f.name} {getattr(given, f.name)!r} (checkpoint: {getattr(spec.model, f.name)!r})"
                    for f in dataclasses.fields(ModelConfig) if getattr(given, f.name) != getattr(spec.model, f.name)]
            raise SpecError(f"{where}: [model] differs from the init checkpoint's: {', '.join(diff)}; "
                            "drop [model] (the checkpoint's is used)")
    return spec


def resolve_site_paths(table: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """`table` with each site path (a string site, or a region's `grid`) and the `init` checkpoint
    that exist relative to `base_dir` made absolute; names of cases and shipped recipes stay as
    they are."""
    base = Path(base_dir)

    def here(ref: Any) -> Any:
        return str((base / ref).resolve()) if isinstance(ref, str) and (base / ref).exists() else ref

    if "init" in table:
        table = {**table, "init": here(table["init"])}
    sites = table.get("sites")
    if not isinstance(sites, list):
        return dict(table)
    return {**table, "sites": [{**s, "grid": here(s.get("grid"))} if isinstance(s, dict) and "grid" in s
                               else here(s) for s in sites]}
