"""`GridModelNet`: encoder + readout + head for one grid task, size-agnostic and a `TransferModel`.

Inputs: the schema's bus and branch features, standardised by the model's `Normalizer`, plus (with
`ModelConfig.dc_flow`) each scenario's DC power flow under a capacity-proportional dispatch: a bus
angle column and a branch loading column (`dc_flow_features`), cheap physics that a few
message-passing hops cannot compute on their own.

With `ModelConfig.stress_features` (default) buses and branches get local stress columns
(`gridtune.nn.stress`: load against its nominal value and against the ratings that feed it,
radial structure, an apparent-power loading proxy); with `ModelConfig.dc_loadability` (default)
the scenario's DC loadability (`gridtune.nn.loadability`: one small LP per graph), how far its
load lies beyond what the lossless DC network can carry, on every bus and beside `context`, and
each branch's loading at that limit. With `ModelConfig.outage_feature` each bus also gets the
number of outaged branches it touches, so that an outage is an input at its location and not
only a missing message.

`embed(batch)` is the representation heads and domain adaptation see:
    graph-level tasks (`feasibility`, `cost`): [mean-pool(h), edges, max-pool(h), context]   (B, D)
    node-level task (`opf`):                   [h, mean-pool(h), edges of its graph, context] (N, D)
where `edges` (with `ModelConfig.edge_readout`, 2 * hidden wide) is the mean- and max-pool of a
state per branch row computed from its end buses and its own features (`GridEncoder.edge_summary`):
line limits and outages belong to branches, and bus pools only see them second hand. D = 4 *
hidden + 2 with the edge readout, 2 * hidden + 2 without, plus 1 with `dc_loadability`. `context`
holds two system ratios per graph, total load P and Q over total generation capacity (in-service
units): dimensionless, so they mean the same on case9 and on case118, and they are the
first-order drivers of OPF feasibility (standardised with training statistics, like every input);
with `dc_loadability` the graph's `dc_overload` follows them.

`forward(batch)` returns physical quantities:
    feasibility  (B,) logits of P(infeasible), after a Platt calibration (`logit_scale`,
                 `logit_bias` buffers, identity until `gridtune.nn.calibration.platt_calibrate`
                 sets them; Platt 1999)
    opf          (N, 4) per-unit `OPF_TARGETS` (vm_pu, va_rad, pg_pu, qg_pu); generation is zero
                 at buses without an in-service generator, and (with `balance_pg`) shifted so
                 that each graph's system active-power balance holds (`balance_generation`)
    cost         (B,) $/h
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from gridtune.errors import GridtuneError
from gridtune.grids.features import BUS_FEATURES, OPF_TARGETS
from gridtune.grids.physics import ac_power_balance
from gridtune.nn.cut_table import CutTable
from gridtune.nn.encoders import GridEncoder, in_service_mask, resolve_conv
from gridtune.nn.heads import TASK_SHAPES, check_task, make_head
from gridtune.nn.loadability import LOADABILITY_BRANCH, LOADABILITY_BUS, loadability_features
from gridtune.nn.normalizer import CONTEXT_DIM, Normalizer, system_context
from gridtune.nn.stress import STRESS_BRANCH, STRESS_BUS, stress_features

MAX_PG, N_GEN = (BUS_FEATURES.index(n) for n in ("max_pg_pu", "n_gen"))
GEN_TARGETS = [OPF_TARGETS.index("pg_pu"), OPF_TARGETS.index("qg_pu")]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a `GridModelNet` (stored in every checkpoint).

    Attributes:
        conv: message-passing family, one of `gine`, `gatv2`, `transformer` (default: `gine`).
        hidden: node / edge width (default: 64).
        layers: message-passing blocks (default: 4).
        heads: attention heads for `gatv2` / `transformer` (default: 4).
        dropout: dropout inside blocks (default: 0.0).
        head_hidden: hidden width of the task head; 0 makes the head linear (a logistic
            regression on the embedding for `feasibility`) (default: 64).
        balance_pg: `opf` only: shift predicted generation so that the system active-power
            balance holds under the AC branch model at the predicted voltages (default: True).
        dc_flow: append the DC power flow's bus angle and branch loading (`dc_flow_features`)
            to the inputs (default: True).
        outage_feature: one more bus input, the number of outaged branches at the bus
            (`outaged_degree`), so the location of an outage is explicit rather than only a
            missing message (default: False).
        outage_messages: outaged branches carry messages too, told apart by their
            `in_service = 0` column (default: False: an open breaker carries no power).
        edge_readout: pool branch states (`GridEncoder.edge_summary`, every branch row,
            outaged ones included) into `embed` beside the bus pools (default: True).
        stress_features: append the local stress columns of `gridtune.nn.stress` (bus load against
            its nominal value and against the ratings that feed it, radial structure, branch
            apparent-power loading proxy); needs graphs with `nominal_load_pu` (default: True).
        dc_loadability: append the DC loadability of the scenario (`gridtune.nn.loadability`: one
            small LP per graph, built once per topology and re-solved warm, results cached by
            content): how far the load lies beyond the largest load
            scale the lossless DC network can carry (`dc_overload`), on every bus and as one more
            graph-level column of `embed` beside `context`, and each branch's loading at that
            limit (default: True).
        loadability_cuts: with `dc_loadability`, carry the LP cuts of the training split's
            topologies in the model (`gridtune.nn.cut_table`, filled after training) and answer
            the loadability from them at inference, no solve; a topology the model never saw is
            solved (default: False).
        input_clip: clamp every standardised bus and branch input to [-input_clip, input_clip]
            (default: None, no clamp). A grid unlike the training grids can put inputs hundreds
            of the training standard deviations away (e.g. generator minimum output on a grid
            whose training grids had none), which saturates the output; a bound keeps a model
            answering there.

    The defaults are the settings behind the case118 and case30 figures in docs/results.md
    ("Pre-training"), where the effect of each input is tabulated.
    Width and depth barely matter with these inputs (case118, 25 epochs, cosine lr from 1e-3, test
    AUROC): hidden 64 x 4 layers 0.978, 32 x 2 0.978, 16 x 2 0.977, 8 x 2 0.976, while a 16 x 2
    model infers about 4x faster than 64 x 4 with its LP answers cached and 2.5x with every LP
    solved (`benchmarks/bench_inference.py`).
    A config.json that lacks a setting loads with `LEGACY_MODEL_SETTINGS`.
    """

    conv: str = "gine"
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    dropout: float = 0.0
    head_hidden: int = 64
    balance_pg: bool = True
    dc_flow: bool = True
    outage_feature: bool = False
    outage_messages: bool = False
    edge_readout: bool = True
    stress_features: bool = True
    dc_loadability: bool = True
    loadability_cuts: bool = False
    input_clip: float | None = None

    def __post_init__(self) -> None:
        resolve_conv(self.conv)
        for name in ("hidden", "layers", "heads"):
            if getattr(self, name) < 1:
                raise GridtuneError(f"model setting `{name}` must be at least 1, got `{getattr(self, name)}`")
        if self.head_hidden < 0:
            raise GridtuneError(f"model setting `head_hidden` must be at least 0 (0: a linear head), "
                                f"got `{self.head_hidden}`")
        if not 0.0 <= self.dropout < 1.0:
            raise GridtuneError(f"model setting `dropout` must lie in [0, 1), got `{self.dropout}`")
        if self.input_clip is not None and not self.input_clip > 0:
            raise GridtuneError(f"model setting `input_clip` must be positive, got `{self.input_clip}`")
        if self.loadability_cuts and not self.dc_loadability:
            raise GridtuneError("model setting `loadability_cuts` answers the DC loadability input: "
                                "it needs `dc_loadability=true`")


# Named sets of settings (`model_preset`, `--model-option preset=NAME`); other options override them.
# fast: a model that infers on thousands of case118 scenarios a second on one core: the DC
# loadability answered from the training split's LP cuts (no solve), no DC power flow or stress
# inputs (with the loadability present they added nothing measurable on 2920 held-out case118
# scenarios and cost half the time), no branch readout, 16 wide x 2 blocks (docs/results.md,
# "Fast inference").
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"hidden": 16, "layers": 2, "head_hidden": 16, "edge_readout": False, "dc_flow": False,
             "stress_features": False, "dc_loadability": True, "loadability_cuts": True},
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of preset `name` with `overrides`; an unknown name lists the valid ones."""
    from gridtune.errors import choices_text

    if name not in MODEL_PRESETS:
        raise GridtuneError(f"unknown model preset `{name}`; valid: {choices_text(MODEL_PRESETS)}")
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


# Settings added after the first checkpoints were written, with the value that reproduces the
# model those checkpoints hold; `gridtune.nn.checkpoint` fills them in when a config lacks them.
LEGACY_MODEL_SETTINGS: dict[str, Any] = {"outage_feature": False, "outage_messages": False, "edge_readout": False,
                                         "stress_features": False, "dc_loadability": False,
                                         "loadability_cuts": False}


class GridModelNet(nn.Module):
    """A grid GNN for one task. See the module docstring for what `embed` and `forward` return.

    Args:
        config: hyper-parameters.
        task: `feasibility`, `opf` or `cost`.
        normalizer: fitted statistics (default: identity until `normalizer.fit` is called).
    """

    def __init__(self, config: ModelConfig, task: str, normalizer: Normalizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.task = check_task(task)
        self.graph_level = TASK_SHAPES[task][0]
        self.normalizer = normalizer if normalizer is not None else Normalizer()
        extra_bus, extra_branch = DC_FLOW_DIMS if config.dc_flow else (0, 0)
        extra_bus += int(config.outage_feature)
        if config.stress_features:
            extra_bus, extra_branch = extra_bus + len(STRESS_BUS), extra_branch + len(STRESS_BRANCH)
        if config.dc_loadability:
            extra_bus, extra_branch = extra_bus + len(LOADABILITY_BUS), extra_branch + len(LOADABILITY_BRANCH)
        self.encoder = GridEncoder(config.conv, config.hidden, config.layers, config.heads, config.dropout,
                                   extra_bus=extra_bus, extra_branch=extra_branch,
                                   outage_messages=config.outage_messages, edge_readout=config.edge_readout)
        self.embed_dim = ((4 if config.edge_readout else 2) * config.hidden + CONTEXT_DIM
                          + (len(LOADABILITY_BUS) if config.dc_loadability else 0))
        self.head = make_head(task, self.embed_dim, config.head_hidden)
        # filled after training (`fill_cuts`); empty, every topology is solved
        self.cuts = CutTable() if config.loadability_cuts else None
        self.register_buffer("logit_scale", torch.ones(1))
        self.register_buffer("logit_bias", torch.zeros(1))

    def embed(self, batch: Any) -> Tensor:
        x_raw, ea_raw = batch.x, batch.edge_attr
        index = _batch_vector(batch)
        x, ea = self.normalizer.bus(x_raw), self.normalizer.branch(ea_raw)
        if self.config.input_clip is not None:
            x, ea = x.clamp(-self.config.input_clip, self.config.input_clip), \
                ea.clamp(-self.config.input_clip, self.config.input_clip)
        if self.config.dc_flow or self.config.stress_features:
            theta, flow, loading, q_flow = _dc_flows(x_raw, batch.edge_index, ea_raw, index,
                                                     reactive=self.config.stress_features)
        if self.config.dc_flow:
            x, ea = torch.cat([x, theta], dim=-1), torch.cat([ea, loading], dim=-1)
        on = in_service_mask(ea_raw)
        if self.config.outage_feature:
            x = torch.cat([x, outaged_degree(batch.edge_index, on, x.shape[0]).to(x.dtype)], dim=-1)
        if self.config.stress_features:
            bus, branch = stress_features(x_raw, batch.edge_index, ea_raw, getattr(batch, "nominal_load_pu", None),
                                          index, flow, q_flow)
            x, ea = torch.cat([x, bus], dim=-1), torch.cat([ea, branch], dim=-1)
        context = self.normalizer.context(system_context(x_raw, index))
        if self.config.dc_loadability:
            bus, branch = loadability_features(x_raw, batch.edge_index, ea_raw, index, self.cuts)
            x, ea = torch.cat([x, bus], dim=-1), torch.cat([ea, branch], dim=-1)
            # one value per graph, repeated on its buses: the head gets it directly
            context = torch.cat([context, global_max_pool(bus, index, context.shape[0])], dim=-1)
        h = self.encoder(x, batch.edge_index, ea, on)
        mean = global_mean_pool(h, index)
        pooled = [mean]
        if self.config.edge_readout:
            n_graphs = context.shape[0]
            pooled.append(self.encoder.edge_summary(h, batch.edge_index, ea, index[batch.edge_index[0]], n_graphs))
        if self.graph_level:
            return torch.cat([*pooled, global_max_pool(h, index), context], dim=-1)  # (B, D)
        return torch.cat([h, *(p[index] for p in pooled), context[index]], dim=-1)  # (N, D)

    def forward(self, batch: Any) -> Tensor:
        if self.task == "feasibility":
            return self.head_logits(self.embed(batch))
        out = self.head(self.embed(batch))
        nz = self.normalizer
        if self.task == "cost":
            return nz.cost_mean + nz.cost_std * out
        out = nz.opf_mean + nz.opf_std * out  # (N, 4) physical per-unit
        has_gen = (batch.x[:, N_GEN] > 0).to(out.dtype).unsqueeze(-1)
        out = torch.cat([out[:, :GEN_TARGETS[0]], out[:, GEN_TARGETS[0]:] * has_gen], dim=-1)
        if self.config.balance_pg:
            out = balance_generation(out, batch, _batch_vector(batch))
        return out

    def head_logits(self, z: Tensor) -> Tensor:
        """Feasibility logits of embeddings `z` (B, embed_dim): the head and its calibration, so
        that `forward(batch) == head_logits(embed(batch))`; on a frozen encoder the embeddings
        can be computed once and the head trained on them."""
        return self.head(z) * self.logit_scale + self.logit_bias


DC_FLOW_DIMS = (1, 1)  # (bus angle, branch loading)


def fill_cuts(model: Any, graphs: Any) -> int:
    """With `loadability_cuts`, solve `graphs`' loadability LPs (the training split) and store their
    topologies' cuts in the model; returns the topologies stored (0: nothing to do)."""
    from gridtune.nn.loadability import solved_topologies

    cuts = getattr(model, "cuts", None)
    if not isinstance(cuts, CutTable):
        return 0
    cuts.fill(solved_topologies(graphs))
    return len(cuts)


def outaged_degree(edge_index: Tensor, in_service: Tensor, n: int) -> Tensor:
    """Outaged branches incident to each bus (each branch has a row per direction, so counting
    rows by source counts each branch once at either end). Shapes: (2, E), (E,) -> (N, 1)
    """
    out = torch.zeros(n, device=edge_index.device)
    out.index_add_(0, edge_index[0, ~in_service], torch.ones(int((~in_service).sum()), device=edge_index.device))
    return out.unsqueeze(-1)


@torch.no_grad()
def dc_flow_features(x_raw: Tensor, edge_index: Tensor, edge_attr_raw: Tensor, index: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """DC power flow of each scenario under a capacity-proportional dispatch, as model inputs.

    Generation meets each graph's total load in proportion to in-service P capacity; the DC
    power flow (B-theta, lossless, angle 0 at the reference bus) gives bus angles and branch flows;
    a branch's loading is |flow| / rating. Near a feasibility boundary of a line-limited grid the
    branches that would overload are what decides feasibility, and a few message-passing hops
    cannot compute a power flow on their own. One sparse solve per batch (scipy), no gradient.

    Shapes: x_raw (N, F_bus), edge_index (2, 2E), edge_attr_raw (2E, F_branch), index (N,)
        -> theta_rad (N, 1), loading (2E, 1) (0 on outaged branches; both directions alike)
    """
    theta, _, loading = _dc_flow(x_raw, edge_index, edge_attr_raw, index)
    return theta, loading


@torch.no_grad()
def _dc_flow(x_raw: Tensor, edge_index: Tensor, edge_attr_raw: Tensor, index: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
    """`dc_flow_features` plus the signed flow per branch row: (N, 1), (2E, 1), (2E, 1)."""
    return _dc_flows(x_raw, edge_index, edge_attr_raw, index, reactive=False)[:3]


@torch.no_grad()
def _dc_flows(x_raw: Tensor, edge_index: Tensor, edge_attr_raw: Tensor, index: Tensor, *, reactive: bool
              ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """`_dc_flow` and, with `reactive`, the reactive flow `stress_features` needs, from the same
    grouping of the batch and one product per topology: (N, 1), (2E, 1), (2E, 1), (2E, 1) or None."""
    import numpy as np

    from gridtune.grids.features import BRANCH_FEATURES as BF
    from gridtune.nn.stress import linear_flows, proportional_injection, reactive_injection

    xr = x_raw.double().cpu().numpy()
    ea = edge_attr_raw.double().cpu().numpy()
    idx = index.cpu().numpy()
    # Capacity-proportional, not merit-order: an equal-incremental-cost dispatch gave branch
    # loadings no more predictive of case118 feasibility (gradient boosting on the ten highest
    # loadings and the system ratios, 5-fold: 0.927 both ways).
    p = proportional_injection(xr, idx, "pd_pu", "max_pg_pu")  # (N,) injections, p.u.
    if reactive:  # phase shifters act on P only
        theta, flows = linear_flows(xr, edge_index.cpu().numpy(), ea, idx,
                                    np.stack([p, reactive_injection(xr, idx)], axis=1), shift=(True, False))
        theta, flow, q_flow = theta[:, 0], flows[:, 0], flows[:, 1]
    else:
        theta, flow = linear_flows(xr, edge_index.cpu().numpy(), ea, idx, p)
    on = ea[:, BF.index("in_service")] > 0.5
    loading = np.where(on, np.abs(flow) / np.maximum(ea[:, BF.index("rate_a_pu")], 1e-6), 0.0)
    dtype, device = x_raw.dtype, x_raw.device
    as_col = lambda a: torch.as_tensor(a, dtype=dtype, device=device).unsqueeze(-1)  # noqa: E731
    return (as_col(theta), as_col(flow), as_col(np.minimum(loading, 10.0)),
            as_col(q_flow) if reactive else None)


def balance_generation(out: Tensor, batch: Any, index: Tensor) -> Tensor:
    """Close each graph's system active-power balance by shifting predicted generation.

    The residual `sum pg - sum pd - sum gs vm^2 - losses(vm, va)` (AC pi-model branch flows at the
    predicted voltages) is taken off the generators in proportion to their capacity. Losses do not
    depend on pg, so after the shift the system balance holds exactly; nodal balance does not
    (that needs consistent angles). An equality completion in the spirit of DC3 (Donti, Rolnick and
    Kolter 2021), differentiable end to end.

    Shapes: out (N, 4) per-unit OPF_TARGETS, index (N,) -> (N, 4)
    """

    vm, va, pg = (out[:, OPF_TARGETS.index(n)] for n in ("vm_pu", "va_rad", "pg_pu"))
    nodal, _ = ac_power_balance(batch.x, batch.edge_index, batch.edge_attr, vm, va, pg)
    residual = global_add_pool(nodal.to(out.dtype).unsqueeze(-1), index).squeeze(-1)  # (B,)
    cap = batch.x[:, MAX_PG].clamp_min(0.0) * (batch.x[:, N_GEN] > 0)
    share = cap / global_add_pool(cap.unsqueeze(-1), index).squeeze(-1).clamp_min(1e-9)[index]
    pg_col = GEN_TARGETS[0]
    shifted = out[:, pg_col] - residual[index] * share
    return torch.cat([out[:, :pg_col], shifted.unsqueeze(-1), out[:, pg_col + 1:]], dim=-1)


def _batch_vector(batch: Any) -> Tensor:
    index = getattr(batch, "batch", None)
    if index is None:  # a single graph, not collated
        index = torch.zeros(batch.x.shape[0], dtype=torch.long, device=batch.x.device)
    return index


def build_model(config: ModelConfig, task: str, normalizer: Normalizer | None = None) -> GridModelNet:
    """Build an untrained model for `task` (seed the RNG first for reproducible weights)."""
    return GridModelNet(config, task, normalizer)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
