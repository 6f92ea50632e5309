import json
import math

import pytest

from gridtune.federated.privacy import epsilon_spent, sample_rate, steps_per_epoch
from gridtune.federated.sites import open_site


@pytest.mark.slow
def test_simulation_under_record_dp_writes_metrics_epsilon_plots_and_report(simulated, site_dirs):
    spec, result, tmp_path = simulated
    run = result["runs"][0]
    assert [r["sites"] for r in run["rounds"]] == [[0, 1], [0, 1]]
    # under DP a site sends only its privatised weights: no validation metric of its data
    assert all(math.isnan(v) for r in run["rounds"] for v in r["val_auroc_global"].values())
    for name in ("case9", "case9_other"):
        methods = run["sites"][name]
        assert set(methods) == {"global", "finetune", "head", "local"}
        assert all(0.0 <= m["auroc"] <= 1.0 for m in methods.values())
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    # the reported epsilon is the accountant's for the steps each site took, within the budget
    priv = run["privacy"]
    for i, (name, site) in enumerate(priv["per_site"].items()):
        n_train = len(open_site(name, site_dirs[i], None, 0, spec.split).train)
        assert site["sample_rate"] == sample_rate(n_train, spec.train.batch_size)
        assert site["steps"] == spec.rounds * spec.local_epochs * steps_per_epoch(n_train, spec.train.batch_size)
        assert site["epsilon"] == pytest.approx(epsilon_spent(site["noise_multiplier"], site["sample_rate"],
                                                              site["steps"], 1e-5))
        assert 7.0 < site["epsilon"] <= 8.0
    assert priv["epsilon"] == max(s["epsilon"] for s in priv["per_site"].values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["epsilon_max"] == pytest.approx(priv["epsilon"])
    assert json.loads((tmp_path / "config.json").read_text())["privacy"]["kind"] == "record"
    report = (tmp_path / "report.md").read_text()
    assert "epsilon spent" in report and "| case9 |" in report


@pytest.mark.slow
def test_head_only_rounds_on_a_public_encoder_release_the_head_alone(site_dirs, tiny_spec, public_checkpoint,
                                                                     tmp_path):
    import dataclasses

    import numpy as np
    import torch

    from gridtune.federated.client import Job, _init_model, local_round
    from gridtune.federated.personalise import evaluate_site
    from gridtune.federated.run import privacy_plan, train_federated
    from gridtune.federated.spec import Privacy
    from gridtune.nn.checkpoint import load_checkpoint

    spec = tiny_spec(site_dirs, init=public_checkpoint, shared="head",
                     privacy=Privacy(kind="record", epsilon=8.0, delta=1e-5))
    job = Job(spec, 0, ("case9", "case9_other"), tuple(site_dirs))
    job = dataclasses.replace(job, noise_multipliers=privacy_plan(job)[0])
    public, _ = load_checkpoint(public_checkpoint)
    names = [n for n, _ in public.named_parameters()]
    head = [p.detach().numpy() for n, p in public.named_parameters() if n.startswith("head.")]
    assert 0 < len(head) < len(names)

    # one site's round: only head arrays leave it, and they moved (DP-SGD steps on the head)
    sent, n_train, _ = local_round(job, 0, [h.astype(np.float64) for h in head], 1)
    assert [w.shape for w in sent] == [h.shape for h in head] and n_train > 0
    assert any(not np.array_equal(w, h) for w, h in zip(sent, head, strict=True))

    trained = train_federated(job, tmp_path)
    assert [w.shape for w in trained["weights"]] == [h.shape for h in head]
    assert 0 < trained["privacy"]["epsilon"] <= 8.0
    # training never touched the public model every site starts from
    fresh = dict(load_checkpoint(public_checkpoint)[0].named_parameters())
    for name, p in _init_model(public_checkpoint).named_parameters():
        assert torch.equal(p, fresh[name]), name
    metrics = evaluate_site(job, 0, trained["weights"])
    assert set(metrics) == {"global", "finetune", "head", "local"}
    assert all(0.0 <= m["auroc"] <= 1.0 for m in metrics.values())
