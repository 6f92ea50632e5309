import pytest

from gridtune.federated.client import Job
from gridtune.federated.run import train_federated


@pytest.mark.slow
def test_loopback_processes_give_the_simulations_global_model(simulated, site_dirs, tmp_path):
    import dataclasses

    from gridtune.federated.run import privacy_plan, weights_digest

    spec, result, _ = simulated
    job = Job(dataclasses.replace(spec, mode="loopback"), 0, ("case9", "case9_other"), tuple(site_dirs))
    job = dataclasses.replace(job, noise_multipliers=privacy_plan(job)[0])
    loop = train_federated(job, tmp_path)
    sim = result["runs"][0]
    assert loop["engine"]["mode"] == "loopback" and loop["engine"]["address"].startswith("127.0.0.1:")
    # DP-SGD noise, batches and aggregation are seeded alike: the same global weights to the bit
    assert weights_digest(loop["weights"]) == sim["global_weights_sha"]
    assert [r.sites for r in loop["rounds"]] == [r["sites"] for r in sim["rounds"]] == [[0, 1], [0, 1]]
    assert loop["privacy"]["epsilon"] == pytest.approx(sim["privacy"]["epsilon"])


@pytest.mark.slow
def test_a_client_killed_mid_round_is_reported_and_dropped_without_hanging(site_dirs, tiny_spec, tmp_path):
    spec = tiny_spec(site_dirs, mode="loopback", rounds=3, round_timeout_s=90.0, on_client_failure="drop")
    job = Job(spec, 0, ("case9", "case9_other"), tuple(site_dirs))

    def kill_in_round_two(server_round, nodes):
        if server_round == 2:  # round 1 done, round 2 starting: site 1's process dies
            nodes.kill(1)

    out = train_federated(job, tmp_path, on_round=kill_in_round_two)
    rounds = out["rounds"]
    assert [r.sites for r in rounds] == [[0, 1], [0], [0]]
    assert rounds[1].failed == [1] and rounds[2].failed == []
    assert out["engine"]["exits"] and out["engine"]["exits"][0]["site"] == 1
    assert out["engine"]["wall_time_s"] < 3 * spec.round_timeout_s + 60


@pytest.mark.slow
def test_a_killed_client_is_restarted_under_retry_and_takes_part_again(site_dirs, tiny_spec, tmp_path):
    spec = tiny_spec(site_dirs, mode="loopback", rounds=3, round_timeout_s=90.0, on_client_failure="retry")
    job = Job(spec, 0, ("case9", "case9_other"), tuple(site_dirs))
    out = train_federated(job, tmp_path, on_round=lambda r, nodes: nodes.kill(1) if r == 2 else None)
    assert out["engine"]["restarts"][1] == 1 and out["engine"]["exits"][0]["site"] == 1
    assert out["rounds"][0].sites == [0, 1] and out["rounds"][2].sites == [0, 1]
