import numpy as np
import pytest
import torch

from gridtune.errors import SpecError
from gridtune.federated.privacy import (
    clip_and_sum,
    epsilon_spent,
    noise_for_budget,
    per_graph_gradients,
    privatise_updates,
)


def test_epsilon_is_opacus_rdp_accountant_for_the_steps_taken():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(120):
        acc.step(noise_multiplier=1.1, sample_rate=0.05)
    assert epsilon_spent(1.1, 0.05, 120, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert epsilon_spent(1.1, 0.05, 240, 1e-5) > epsilon_spent(1.1, 0.05, 120, 1e-5)


def test_noise_is_searched_for_the_budget_and_a_fixed_one_must_reach_it():
    sigma = noise_for_budget(8.0, 1e-5, 0.1, 200)
    assert epsilon_spent(sigma, 0.1, 200, 1e-5) <= 8.0
    assert epsilon_spent(sigma * 0.9, 0.1, 200, 1e-5) > 8.0 * 0.99
    assert noise_for_budget(8.0, 1e-5, 0.1, 200, noise_multiplier=2 * sigma) == 2 * sigma
    with pytest.raises(SpecError, match=r"noise_multiplier `0.3` cannot reach epsilon `8.0` .* at least"):
        noise_for_budget(8.0, 1e-5, 0.1, 200, noise_multiplier=0.3)


def _model_and_graphs(site_dirs, tiny_spec):
    from gridtune.federated.client import Job, site_model, site_task

    job = Job(tiny_spec(site_dirs), 0, ("case9", "case9_other"), tuple(site_dirs))
    site = job.site(0)
    return site_model(job, site), site_task(site), site.train[:6]


def test_per_graph_clipping_bounds_each_graphs_contribution(site_dirs, tiny_spec):
    model, task, graphs = _model_and_graphs(site_dirs, tiny_spec)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = per_graph_gradients(model, graphs, task.loss, params)
    norms = [float(torch.sqrt(sum((g ** 2).sum() for g in per))) for per in grads]
    clip = 0.5 * min(norms)  # every graph is clipped
    base = clip_and_sum(grads, clip)
    # an outlier graph: another graph's gradient, 1000 times larger (far beyond the bound) ...
    odd = [g * 1000 for g in grads[1]]
    # ... yet swapping it in moves the clipped sum by at most 2 * clip
    moved = clip_and_sum([odd] + grads[1:], clip)
    change = float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(base, moved))))
    assert change <= 2 * clip + 1e-6
    assert float(torch.sqrt(sum((g ** 2).sum() for g in clip_and_sum([odd], clip)))) == pytest.approx(clip, rel=1e-5)


def test_on_a_frozen_encoder_each_embedded_graph_has_its_graphs_head_gradient(site_dirs, tiny_spec,
                                                                              public_checkpoint):
    from gridtune.federated.client import Job, embedded, head_example_loss, round_task, site_model
    from gridtune.federated.privacy import per_example_gradients
    from gridtune.federated.weights import shared_parameters

    job = Job(tiny_spec(site_dirs, init=public_checkpoint, shared="head"), 0, ("a", "b"), tuple(site_dirs))
    site = job.site(0)
    model = site_model(job, site)
    model.requires_grad_(False)
    params = shared_parameters(model, "head")
    for p in params:
        p.requires_grad_(True)
    task = round_task(job, site)
    assert task.pos_weight == 1.0  # with init the rounds' loss takes no statistic of the site's data
    graphs = site.train[:6]
    by_graph = per_graph_gradients(model, graphs, task.loss, params)
    by_embedding = per_example_gradients(head_example_loss(model, task), embedded(model, graphs), params)
    assert any(float(g.abs().sum()) > 0 for per in by_graph for g in per)
    for a, b in zip(by_graph, by_embedding, strict=True):
        for ga, gb in zip(a, b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)


def test_client_level_release_depends_on_raw_updates_only_through_their_clipped_form():
    rng = np.random.default_rng(0)
    deltas = [rng.normal(size=50) for _ in range(3)]
    far = [d.copy() for d in deltas]
    far[1] = deltas[1] / np.linalg.norm(deltas[1]) * 1e6  # same direction, far beyond the bound
    near = [d.copy() for d in deltas]
    near[1] = deltas[1] / np.linalg.norm(deltas[1]) * 10.0
    a, _ = privatise_updates(near, 1.0, 0.8, np.random.default_rng(5))
    b, _ = privatise_updates(far, 1.0, 0.8, np.random.default_rng(5))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)  # nothing of the raw magnitude leaks
    c, _ = privatise_updates(near, 1.0, 0.8, np.random.default_rng(6))
    assert not np.allclose(a, c)  # only the noise draw changes the release


def test_released_global_weights_come_only_from_privatised_updates():
    from gridtune.federated.server import aggregate
    from gridtune.federated.spec import FederatedSpec, Privacy

    spec = FederatedSpec(sites=("a", "b", "c"), privacy=Privacy(kind="client", epsilon=8.0))
    g = [np.zeros((4, 3)), np.zeros(5)]
    rng = np.random.default_rng(1)
    sites = [[rng.normal(size=(4, 3)), rng.normal(size=5)] for _ in range(3)]
    blown = [[w * 1e4 for w in sites[2]] if k == 2 else sites[k] for k in range(3)]
    run = lambda ws, r=1: aggregate(spec, 0, r, g, [(k, w, 10 * (k + 1)) for k, w in enumerate(ws)], 1.2)[0]  # noqa: E731
    for x, y in zip(run(sites), run(blown)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)
    # without DP the same change moves the global model: the test above could fail
    plain = FederatedSpec(sites=("a", "b", "c"))
    moved = aggregate(plain, 0, 1, g, [(k, w, 10) for k, w in enumerate(blown)])[0]
    kept = aggregate(plain, 0, 1, g, [(k, w, 10) for k, w in enumerate(sites)])[0]
    assert not np.allclose(moved[0], kept[0])
    assert not np.allclose(run(sites, 1)[0], run(sites, 2)[0])  # fresh noise each round
