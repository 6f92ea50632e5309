"""Calibration, decision curves and the transfer verdict on constructed cases with known answers."""

import numpy as np
import pytest
import torch

from gridtune.core.calibration import calibrate, fit_platt, fit_temperature, plot_reliability
from gridtune.core.decision import net_benefit, plot_decision_curve, useful_thresholds
from gridtune.core.metrics import expected_calibration_error, reliability_table
from gridtune.core.verdict import transfer_verdict
from gridtune.errors import GridtuneError


def _overconfident(n, seed, factor=4.0):
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(z)).long()
    return factor * z, y  # logits 4x too large: an over-confident model


def test_temperature_scaling_recovers_temperature_and_lowers_ece():
    val_logits, val_y = _overconfident(4000, 0)
    test_logits, test_y = _overconfident(4000, 1)
    t = fit_temperature(val_logits, val_y)
    assert t == pytest.approx(4.0, rel=0.15)
    rep = calibrate(val_logits, val_y, test_logits, test_y)
    assert rep["ece_before"] > 0.05
    assert rep["ece_after"] < 0.5 * rep["ece_before"]
    assert sum(r["count"] for r in rep["reliability_after"]) == 4000


def test_temperature_scaling_multiclass_keeps_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 3, generator=g) * 5
    y = torch.distributions.Categorical(logits=logits / 5).sample()
    t = fit_temperature(logits, y)
    assert t > 2.0
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_ece_by_hand():
    probs = np.array([0.9, 0.8, 0.3, 0.6])  # P(positive)
    labels = np.array([1, 0, 0, 1])
    rows = reliability_table(probs, labels, bins=2)
    assert [r["count"] for r in rows] == [1, 3]
    # bin [0, .5): mean .3, share 0 -> .3; bin [.5, 1]: mean .7667, share 2/3 -> .1
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx((0.3 + 3 * 0.1) / 4)
    # 10 bins: |1-.9| + |0-.8| + |0-.3| + |1-.6| over 4
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(1.6 / 4)


def test_multiclass_ece_uses_the_top_label():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])  # conf .9 .8 .7 .6
    labels = np.array([0, 0, 0, 1])                                      # right, wrong, right, right
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(1.6 / 4)


def test_platt_scaling_recovers_a_known_scale_and_refuses_one_class():
    logits, y = _overconfident(4000, 2)
    scale, bias = fit_platt(logits, y)
    assert scale == pytest.approx(0.25, rel=0.15) and abs(bias) < 0.1
    assert fit_platt(logits, torch.ones_like(y)) is None


def test_reliability_plot_written(tmp_path):
    logits, y = _overconfident(300, 0)
    path = plot_reliability(calibrate(logits, y, logits, y), tmp_path / "rel.png")
    assert path.stat().st_size > 1000


def test_net_benefit_by_hand():
    c = net_benefit(np.array([0.9, 0.2, 0.6, 0.1]), np.array([1, 0, 0, 0]), np.array([0.5, 0.8]))
    # t=0.5: act on 0.9 (TP) and 0.6 (FP): 1/4 - 1/4 * 1 = 0; treat-all: 1/4 - 3/4 = -0.5
    # t=0.8: act on 0.9 only: 1/4
    assert c["model"] == pytest.approx([0.0, 0.25])
    assert c["treat_all"] == pytest.approx([-0.5, 0.25 - 0.75 * 4])
    assert c["treat_none"] == [0.0, 0.0]


def test_perfect_predictor_is_useful_everywhere_and_uninformative_one_nowhere(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.random(1000) < 0.3
    perfect = net_benefit(y.astype(float) * 0.99 + 0.005, y)
    assert np.allclose(perfect["model"], y.mean())  # every positive caught, no false alarm
    assert len(useful_thresholds(perfect)) == 99
    constant = net_benefit(np.full(1000, 0.3), y)  # knows only the prevalence
    assert useful_thresholds(constant, margin=1e-12) == []
    path = plot_decision_curve({"perfect": perfect, "prevalence only": constant}, tmp_path / "dc.png")
    assert path.stat().st_size > 1000
    with pytest.raises(GridtuneError, match=r"thresholds must lie in \(0, 1\), got `0.0`"):
        net_benefit(np.array([0.5]), np.array([1]), np.array([0.0, 0.5]))


def test_verdict_flags_constructed_negative_transfer():
    rng = np.random.default_rng(1)
    scratch = 0.90 + 0.01 * rng.standard_normal(5)
    hurt = scratch - 0.05 + 0.005 * rng.standard_normal(5)
    v = transfer_verdict(hurt, scratch)
    assert v.negative_transfer and not v.positive_transfer
    assert v.ci_high < 0 and v.gain_mean == pytest.approx(-0.05, abs=0.01)
    helped = transfer_verdict(scratch + 0.03, scratch)
    assert helped.positive_transfer and not helped.negative_transfer
    noisy = transfer_verdict(scratch + 0.02 * rng.standard_normal(5), scratch)
    assert noisy.ci_low < 0 < noisy.ci_high
    assert not noisy.negative_transfer and not noisy.positive_transfer
    # an error metric: lower is better, so higher error after transfer is negative transfer
    assert transfer_verdict([0.3, 0.31, 0.32], [0.2, 0.21, 0.2], higher_is_better=False).negative_transfer


def test_verdict_needs_three_seeds_and_a_large_enough_test_set():
    two = transfer_verdict([0.80, 0.81], [0.90, 0.91])
    assert two.ci_high < 0 and not two.negative_transfer and two.label == "inconclusive"
    assert "too few for a verdict" in two.note
    hurt, scratch = [0.80, 0.81, 0.805], [0.90, 0.91, 0.905]
    small = transfer_verdict(hurt, scratch, n_test=400, min_test=1000)
    assert small.ci_high < 0 and small.label == "inconclusive" and "test set of 400 < 1000" in small.note
    assert transfer_verdict(hurt, scratch, n_test=1000, min_test=1000).negative_transfer


def test_verdict_single_seed_and_errors():
    v = transfer_verdict([0.8], [0.9])
    assert v.gain_mean == pytest.approx(-0.1) and not v.negative_transfer
    assert "one seed" in v.note
    with pytest.raises(GridtuneError, match="paired transfer verdict needs as many strategy as scratch seeds, got `2` and `3`"):
        transfer_verdict([0.8, 0.9], [0.9, 0.9, 0.8])
    with pytest.raises(GridtuneError, match="`auroc` has NaN values"):
        transfer_verdict([float("nan"), 0.9], [0.9, 0.9])
