"""The Cox partial likelihood against lifelines and statsmodels; Harrell's C against lifelines;
`CoxTask` through the core's trainer."""

import numpy as np
import pytest
import torch

from gridtune.core.survival import CoxTask, concordance_index, cox_partial_likelihood
from gridtune.core.trainer import Task, TrainConfig, fit
from gridtune.errors import GridtuneError


def _cohort(tied: bool, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    t_event = rng.exponential(1 / np.exp(x @ np.array([0.8, -0.5, 0.3])))
    t_censor = rng.exponential(1.5, n)
    t = np.minimum(t_event, t_censor)
    if tied:
        t = np.ceil(t * 5) / 5  # a handful of distinct times: many ties
    return x, t, (t_event <= t_censor).astype(float)


def _fit_linear_cox(x, t, e, ties):
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    xt, tt, et = torch.tensor(x), torch.tensor(t), torch.tensor(e)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = cox_partial_likelihood(xt @ w, tt, et, ties)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


@pytest.mark.parametrize("tied", [False, True])
def test_linear_cox_matches_lifelines_efron(tied):
    pd = pytest.importorskip("pandas")
    lifelines = pytest.importorskip("lifelines")
    x, t, e = _cohort(tied)
    assert tied == (len(np.unique(t)) < len(t))
    df = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=t, E=e)
    ref = lifelines.CoxPHFitter().fit(df, "T", "E").params_.to_numpy()
    np.testing.assert_allclose(_fit_linear_cox(x, t, e, "efron"), ref, atol=1e-3)


def test_without_ties_breslow_equals_efron_and_lifelines():
    pd = pytest.importorskip("pandas")
    lifelines = pytest.importorskip("lifelines")
    x, t, e = _cohort(tied=False)
    df = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=t, E=e)
    ref = lifelines.CoxPHFitter().fit(df, "T", "E").params_.to_numpy()
    np.testing.assert_allclose(_fit_linear_cox(x, t, e, "breslow"), ref, atol=1e-3)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_tied_times_match_statsmodels_phreg(ties):
    # lifelines implements Efron's method only; statsmodels' PHReg has both
    sm = pytest.importorskip("statsmodels.api")
    x, t, e = _cohort(tied=True)
    ref = sm.PHReg(t, x, status=e, ties=ties).fit().params
    np.testing.assert_allclose(_fit_linear_cox(x, t, e, ties), ref, atol=1e-3)


def test_breslow_and_efron_differ_with_ties():
    x, t, e = _cohort(tied=True)
    assert np.abs(_fit_linear_cox(x, t, e, "breslow") - _fit_linear_cox(x, t, e, "efron")).max() > 0.05


def test_loss_value_by_hand():
    # times 1, 1, 2 (events, tied at 1), 3 censored; risks r
    r = torch.tensor([0.2, -0.1, 0.5, 0.3], dtype=torch.float64)
    t = torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    e = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    x = r.exp()
    all_, tied, later = x.sum(), x[:2].sum(), x[2:].sum()
    breslow = -(r[:3].sum() - 2 * all_.log() - later.log()) / 3
    efron = -(r[:3].sum() - all_.log() - (all_ - tied / 2).log() - later.log()) / 3
    assert float(cox_partial_likelihood(r, t, e, "breslow")) == pytest.approx(float(breslow), abs=1e-12)
    assert float(cox_partial_likelihood(r, t, e, "efron")) == pytest.approx(float(efron), abs=1e-12)


def test_loss_is_shift_invariant_and_stable():
    x, t, e = _cohort(tied=True, n=50)
    r = torch.tensor(x[:, 0])
    a = cox_partial_likelihood(r, torch.tensor(t), torch.tensor(e))
    b = cox_partial_likelihood(r + 500.0, torch.tensor(t), torch.tensor(e))
    assert torch.isfinite(b) and float(a) == pytest.approx(float(b), abs=1e-9)


def test_no_events_gives_zero_with_gradient():
    r = torch.randn(5, requires_grad=True)
    loss = cox_partial_likelihood(r, torch.arange(5.0), torch.zeros(5))
    loss.backward()
    assert float(loss.detach()) == 0.0 and r.grad is not None


@pytest.mark.parametrize("tied", [False, True])
def test_concordance_matches_lifelines(tied):
    lifelines_utils = pytest.importorskip("lifelines.utils")
    x, t, e = _cohort(tied)
    risk = x @ np.array([0.8, -0.5, 0.3])
    risk[:20] = np.round(risk[:20])  # some tied risks too
    # lifelines scores predicted survival times: higher = longer, the opposite of a risk
    ref = lifelines_utils.concordance_index(t, -risk, e)
    assert concordance_index(risk, t, e) == pytest.approx(ref, abs=1e-12)


def test_concordance_perfect_and_reversed():
    t = np.arange(1.0, 11.0)
    e = np.ones(10)
    assert concordance_index(-t, t, e) == 1.0
    assert concordance_index(t, t, e) == 0.0
    assert np.isnan(concordance_index(t, t, np.zeros(10)))


def test_cox_task_trains_a_model_with_the_core_trainer():
    x, t, e = _cohort(tied=True, n=400)
    y = torch.tensor(np.stack([t, e], axis=1), dtype=torch.float32)
    data = list(zip(torch.tensor(x, dtype=torch.float32), y))
    task = CoxTask()
    assert isinstance(task, Task)
    model = torch.nn.Linear(3, 1, bias=False)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, batch):
            return self.lin(batch[0]).squeeze(-1)

    loader = torch.utils.data.DataLoader(data, batch_size=400)
    result = fit(Wrap(), loader, loader, task, TrainConfig(epochs=300, lr=0.05, patience=300))
    assert result.best_val["c_index"] > 0.7
    w = model.weight.detach().numpy().ravel()
    # early stopping keeps the best-ranking epoch, and the concordance is flat near the optimum:
    # the kept weights point the way the maximum-likelihood fit does, their length may differ
    ref = _fit_linear_cox(x, t, e, "efron")
    assert float(w @ ref / (np.linalg.norm(w) * np.linalg.norm(ref))) > 0.98


def test_bad_inputs_are_clear_errors():
    with pytest.raises(GridtuneError, match="ties"):
        CoxTask(ties="exact")
    with pytest.raises(GridtuneError, match="same length"):
        cox_partial_likelihood(torch.zeros(3), torch.zeros(4), torch.zeros(3))
    with pytest.raises(GridtuneError, match=r"\(B, 2\)"):
        CoxTask().target((torch.zeros(3, 1), torch.zeros(3)))
