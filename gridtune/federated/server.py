"""Aggregation of site models and the Flower strategy that runs it.

`aggregate` is the whole server computation; `make_strategy` wraps it in Flower's own FedAvg or
FedProx strategy (their client selection and configuration; FedProx sends `proximal_mu`), the
same object in the in-process simulation and in loopback, so both modes aggregate alike.

    fedavg, fedprox  new = sum_k n_k w_k / sum_k n_k          (McMahan et al. 2017; Li et al. 2020)
    reptile          new = g + meta_lr * (that mean - g)      (Nichol et al. 2018, "On first-order
                     meta-learning algorithms"; federated form: Jiang et al. 2019, "Improving federated
                     learning personalization via model agnostic meta learning")
    client-level DP  new = g + step * (sum_k clip(w_k - g) + noise) / K   (`privacy.privatise_updates`)

Sites are aggregated in site order, whatever order their answers arrived in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gridtune.federated.spec import FederatedSpec
from gridtune.federated.weights import derived_seed, flatten, unflatten

CLIENT_DP_STREAM = 7919  # a constant separating the server's noise stream from the sites' streams


@dataclasses.dataclass
class RoundRecord:
    """What happened in one round: who answered, who failed, the global model's validation AUROC
    on each answering site (before its local training) and the DP figures of the round."""

    round: int
    sites: list[int]
    failed: list[int]
    errors: list[str]
    val_auroc_global: dict[int, float]
    privacy: dict[str, float] = dataclasses.field(default_factory=dict)


def aggregate(spec: FederatedSpec, seed: int, server_round: int, global_weights: list[np.ndarray],
              results: list[tuple[int, list[np.ndarray], int]], client_noise: float | None = None
              ) -> tuple[list[np.ndarray], dict[str, float]]:
    """The next global weights from the sites' answers `(site, weights, n_train)`."""
    results = sorted(results, key=lambda r: r[0])
    g = flatten(global_weights)
    step = spec.meta_lr if spec.strategy == "reptile" else 1.0
    deltas = [flatten(w) - g for _, w, _ in results]
    info: dict[str, float] = {}
    if spec.privacy.kind == "client":
        from gridtune.federated.privacy import privatise_updates

        rng = np.random.default_rng(derived_seed(seed, server_round, CLIENT_DP_STREAM))
        mean, info = privatise_updates(deltas, spec.privacy.clip_norm, float(client_noise), rng)
    else:
        n = np.array([r[2] for r in results], dtype=np.float64)
        mean = np.sum([d * (k / n.sum()) for d, k in zip(deltas, n, strict=True)], axis=0)
    return unflatten(g + step * mean, global_weights), info


def make_strategy(spec: FederatedSpec, seed: int, initial: list[np.ndarray], n_sites: int, *,
                  client_noise: float | None = None,
                  on_round_start: Callable[[int], None] | None = None) -> Any:
    """A Flower strategy (FedAvg or FedProx) whose aggregation is `aggregate`; it keeps the
    current global weights in `.weights` and a `RoundRecord` per round in `.rounds`."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg, FedProx

    base = FedProx if spec.strategy == "fedprox" else FedAvg
    options: dict[str, Any] = {"proximal_mu": spec.proximal_mu} if spec.strategy == "fedprox" else {}

    class GridStrategy(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=1, min_evaluate_clients=0,
                             min_available_clients=1, initial_parameters=ndarrays_to_parameters(initial),
                             on_fit_config_fn=lambda r: {"round": r}, **options)
            self.weights = [np.asarray(w, dtype=np.float64) for w in initial]
            self.rounds: list[RoundRecord] = []
            self.dropped: set[int] = set()
            self.expected = n_sites

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            if on_round_start is not None:
                on_round_start(server_round)
            # every site still taking part joins the round, or the round starts without the
            # missing ones after the timeout (they are reported as failed)
            client_manager.wait_for(self.expected - len(self.dropped), timeout=int(spec.round_timeout_s))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> Any:
            answers = [(int(r.metrics["site"]), [np.asarray(a, dtype=np.float64)
                                                 for a in parameters_to_ndarrays(r.parameters)],
                        int(r.num_examples), float(r.metrics.get("val_auroc_global", np.nan)))
                       for _, r in results]
            answered = sorted(a[0] for a in answers)
            failed = sorted(set(range(n_sites)) - set(answered) - self.dropped)
            if spec.on_client_failure == "drop":
                self.dropped |= set(failed)
            record = RoundRecord(server_round, answered, failed, [_describe(f) for f in failures],
                                 {a[0]: a[3] for a in answers})
            self.rounds.append(record)
            if len(answers) < spec.min_sites:
                return None, {}
            self.weights, record.privacy = aggregate(spec, seed, server_round, self.weights,
                                                     [a[:3] for a in answers], client_noise)
            return ndarrays_to_parameters(self.weights), {}

    return GridStrategy()


def _describe(failure: Any) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"[:300]
    status = getattr(getattr(failure, "status", None), "message", None)
    return str(status or failure)[:300]
