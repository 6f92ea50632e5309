"""Split-conformal sets and intervals, and the familiarity score, on synthetic data with known
answers: coverage at least 1 - alpha and at most 1 - alpha + 1/(n+1), per class with Mondrian,
the exact order statistic, and the bad inputs."""

import math

import numpy as np
import pytest

from gridtune.core.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    check_alpha,
    class_coverage,
    conformal_quantile,
    coverage,
    interval_coverage,
    min_calibration_size,
    set_names,
)
from gridtune.core.familiarity import Familiarity
from gridtune.errors import DataError, SpecError

CLASSES = ("feasible", "infeasible")


def binary_task(n, rng, minority=0.5, noise=1.5):
    """Labels and P(class 1) from a logistic model whose probabilities are exactly right."""
    y = (rng.random(n) < minority).astype(int)
    z = rng.normal(size=n) * noise + np.where(y == 1, 1.0, -1.0)
    p = 1 / (1 + np.exp(-2 * z / noise**2))  # true posterior for equal priors
    return p, y


def test_quantile_is_the_exact_order_statistic():
    scores = np.arange(1, 101) / 100.0  # 0.01 .. 1.00, n = 100
    # rank ceil(101 * 0.9) = 91 -> 0.91
    assert conformal_quantile(scores, 0.1) == pytest.approx(0.91)
    assert conformal_quantile(scores[::-1], 0.1) == pytest.approx(0.91)  # order does not matter
    # rank ceil(101 * 0.99) = 100 -> the largest score
    assert conformal_quantile(scores, 0.01) == pytest.approx(1.0)


@pytest.mark.parametrize("alpha,need", [(0.05, 19), (0.01, 99), (0.1, 9), (0.5, 1)])
def test_min_calibration_size(alpha, need):
    assert min_calibration_size(alpha) == need
    conformal_quantile(np.ones(need), alpha)  # exactly enough
    if need > 1:
        with pytest.raises(DataError, match=rf"has {need - 1} examples, too few for alpha `{alpha:g}`: "
                                            rf"split conformal needs at least {need}"):
            conformal_quantile(np.ones(need - 1), alpha)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan, "x"])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha):
    with pytest.raises(SpecError, match="strictly between 0 and 1"):
        check_alpha(alpha)
    with pytest.raises(SpecError, match="strictly between 0 and 1"):
        ConformalClassifier.fit(np.full(50, 0.5), np.zeros(50, int), CLASSES, alpha=alpha)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_marginal_coverage_holds_on_average_over_calibration_draws(alpha):
    """E[coverage] is in [1 - alpha, 1 - alpha + 1/(n+1)]; the mean over 300 draws of (calibration,
    test) sits within Monte Carlo error of that band."""
    rng = np.random.default_rng(0)
    n_cal, n_test, reps = 200, 500, 300
    covs = []
    for _ in range(reps):
        p_cal, y_cal = binary_task(n_cal, rng)
        p_te, y_te = binary_task(n_test, rng)
        cp = ConformalClassifier.fit(p_cal, y_cal, CLASSES, alpha=alpha)
        covs.append(coverage(cp.sets(p_te), y_te))
    mean, se = float(np.mean(covs)), float(np.std(covs) / np.sqrt(reps))
    assert 1 - alpha - 4 * se <= mean <= 1 - alpha + 1 / (n_cal + 1) + 4 * se


def test_mondrian_covers_each_class_where_marginal_under_covers_the_rare_one():
    """With 10% positives that the model finds harder than the majority, marginal sets under-cover
    the rare class; Mondrian thresholds bring each class to >= 1 - alpha."""
    rng = np.random.default_rng(1)
    alpha = 0.1

    def draw(n):
        y = (rng.random(n) < 0.1).astype(int)
        return np.where(y == 1, rng.beta(2, 2, n), rng.beta(1, 8, n)), y

    p_cal, y_cal = draw(4000)
    p_te, y_te = draw(20000)
    marginal = ConformalClassifier.fit(p_cal, y_cal, CLASSES, alpha=alpha)
    mondrian = ConformalClassifier.fit(p_cal, y_cal, CLASSES, alpha=alpha, mondrian=True)
    cov_m = class_coverage(marginal.sets(p_te), y_te, CLASSES)
    cov_c = class_coverage(mondrian.sets(p_te), y_te, CLASSES)
    assert cov_m["infeasible"] < 1 - alpha - 0.02  # the rare class loses under one threshold
    for name in CLASSES:
        assert cov_c[name] >= 1 - alpha - 0.01
        assert cov_c[name] <= 1 - alpha + 0.03
    assert coverage(marginal.sets(p_te), y_te) >= 1 - alpha - 0.01
    # the same calibration answers another alpha, and the variant can be switched per call
    assert coverage(mondrian.sets(p_te, 0.2, False), y_te) == pytest.approx(0.8, abs=0.02)


def test_mondrian_refuses_a_class_with_too_few_examples():
    y = np.r_[np.zeros(200, int), np.ones(50, int)]
    p = np.r_[np.full(200, 0.2), np.full(50, 0.8)]
    ConformalClassifier.fit(p, y, CLASSES, alpha=0.01)  # 250 in all: enough marginally
    with pytest.raises(DataError, match=r"calibration class `infeasible` has 50 examples, too few for "
                                        r"alpha `0.01`: split conformal needs at least 99"):
        ConformalClassifier.fit(p, y, CLASSES, alpha=0.01, mondrian=True)


def test_sets_names_and_round_trip():
    rng = np.random.default_rng(2)
    p, y = binary_task(500, rng)
    cp = ConformalClassifier.fit(p, y, CLASSES, alpha=0.1, mondrian=True)
    back = ConformalClassifier.from_dict(cp.to_dict())
    q = np.array([0.0, 0.5, 1.0])
    assert (back.sets(q) == cp.sets(q)).all()
    sets = np.array([[True, False], [False, True], [True, True], [False, False]])
    assert set_names(sets, CLASSES) == ["feasible", "infeasible", "feasible|infeasible", "none"]
    # confident ends give single classes
    assert set_names(cp.sets(np.array([0.0, 1.0])), CLASSES) == ["feasible", "infeasible"]


def test_normalised_intervals_cover_each_column():
    rng = np.random.default_rng(3)
    alpha = 0.1

    def draw(n):
        x = rng.uniform(0.1, 2.0, size=(n, 2))
        y_hat = np.c_[x[:, 0], 3 * x[:, 1]]
        sigma = x  # heteroscedastic noise with known scale
        return y_hat + rng.normal(size=(n, 2)) * sigma, y_hat, sigma

    y, y_hat, sigma = draw(1000)
    reg = ConformalRegressor.fit(y, y_hat, ["vm", "pg"], sigma=sigma, alpha=alpha)
    y2, y_hat2, sigma2 = draw(20000)
    lo, hi = reg.intervals(y_hat2, sigma=sigma2)
    cov = interval_coverage(y2, lo, hi)
    assert np.all(cov >= 1 - alpha - 0.01) and np.all(cov <= 1 - alpha + 0.02)
    small = sigma2[:, 0] < 0.5  # locally weighted: narrow where noise is small, and still covering
    assert np.mean((hi - lo)[small, 0]) < np.mean((hi - lo)[~small, 0])
    assert ConformalRegressor.from_dict(reg.to_dict()).threshold("pg") == reg.threshold("pg")
    with pytest.raises(DataError, match="sigma must be positive"):
        ConformalRegressor.fit(y, y_hat, ["vm", "pg"], sigma=np.zeros_like(y))


def test_familiarity_flags_shifted_inputs_at_the_calibrated_false_alarm_rate():
    rng = np.random.default_rng(4)
    d = 16
    train, held, test = (rng.normal(size=(n, d)) for n in (2000, 1000, 5000))
    shifted = rng.normal(size=(2000, d)) + np.r_[np.full(4, 2.0), np.zeros(d - 4)]
    from sklearn.metrics import roc_auc_score

    for method in ("knn", "mahalanobis"):
        fam = Familiarity.fit(train, method=method).calibrate(held, false_alarm_rate=0.05)
        assert abs(fam.flag(test).mean() - 0.05) < 0.02
        s_in, s_out = fam.score(test), fam.score(shifted)
        auroc = roc_auc_score(np.r_[np.zeros(s_in.size), np.ones(s_out.size)], np.r_[s_in, s_out])
        assert auroc > 0.8, method
        meta, arrays = fam.state()
        back = Familiarity.from_state(meta, arrays)
        assert np.allclose(back.score(test[:10]), fam.score(test[:10]))
    fam = Familiarity.fit(train).calibrate(held, false_alarm_rate=0.01)
    # a batch of 30 mildly shifted inputs: few cross the per-input threshold, the batch test sees it
    mild = rng.normal(size=(30, d)) + np.r_[np.full(4, 1.2), np.zeros(d - 4)]
    assert fam.shift_pvalue(fam.score(mild)) < 0.01
    p_in = [fam.shift_pvalue(fam.score(rng.normal(size=(30, d)))) for _ in range(100)]
    assert np.mean(np.array(p_in) < 0.05) <= 0.12  # about 5% false alarms at the 5% level
    assert Familiarity.fit(train).shift_pvalue(np.ones(3)) is None  # not calibrated
    with pytest.raises(DataError, match="familiarity calibration set has 50 examples, too few for alpha "
                                        "`0.01`: split conformal needs at least 99"):
        Familiarity.fit(train).calibrate(held[:50], false_alarm_rate=0.01)
    with pytest.raises(SpecError, match="familiarity method `cosine` is not known"):
        Familiarity.fit(train, method="cosine")
