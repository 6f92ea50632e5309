import numpy as np

from gridtune.federated.server import aggregate
from gridtune.federated.spec import FederatedSpec


def _answers():
    rng = np.random.default_rng(0)
    return [(k, [rng.normal(size=(3, 2)), rng.normal(size=4)], n) for k, n in enumerate((10, 30, 60))]


def test_fedavg_is_the_mean_weighted_by_training_graphs_in_any_arrival_order():
    g = [np.ones((3, 2)), np.ones(4)]
    answers = _answers()
    new, _ = aggregate(FederatedSpec(sites=("a", "b", "c")), 0, 1, g, answers)
    expected = sum(w[0] * n for _, w, n in answers) / 100
    np.testing.assert_allclose(new[0], expected, atol=1e-12)
    shuffled, _ = aggregate(FederatedSpec(sites=("a", "b", "c")), 0, 1, g, answers[::-1])
    for a, b in zip(new, shuffled):
        np.testing.assert_array_equal(a, b)  # site order, not arrival order


def test_reptile_steps_meta_lr_of_the_way_to_the_sites_mean():
    g = [np.zeros((3, 2)), np.zeros(4)]
    answers = _answers()
    full, _ = aggregate(FederatedSpec(sites=("a", "b", "c")), 0, 1, g, answers)
    half, _ = aggregate(FederatedSpec(sites=("a", "b", "c"), strategy="reptile", meta_lr=0.5), 0, 1, g, answers)
    for f, h in zip(full, half):
        np.testing.assert_allclose(h, 0.5 * f, atol=1e-12)
