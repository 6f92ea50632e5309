"""Hard kills at seeded random moments (reduced sweep): a build, pre-training, fine-tuning and a
study are SIGKILLed with their workers, run again, and must leave what an uninterrupted run
leaves (dataset content hash, checkpoint metrics, study results), every file sealed and whole.
The full sweep (>= 20 kill points) is `benchmarks/bench_faults.py`."""

from __future__ import annotations

import random

import pytest

from tests.faults import (
    fresh_work,
    kill_and_resume,
    prepare,
    reference,
    run,
    two_studies_one_cache,
    workload_argv,
    workloads,
)

pytestmark = pytest.mark.slow
SEED = 18


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data, _ = prepare(root)
    return root, data


@pytest.mark.parametrize("index", range(4))
def test_a_killed_run_resumes_to_the_uninterrupted_result(shared, index):
    root, data = shared
    w = workloads(data)[index]
    expected, wall_s = reference(w, root)
    rng = random.Random(SEED + index)
    point = kill_and_resume(w, root, rng.uniform(0.4, 0.9) * wall_s, expected, 0)
    assert point.equal, (w.name, point)
    assert "Traceback" not in point.resume_stderr


def test_a_pretraining_killed_after_an_epoch_continues_from_it(shared):
    """Killed once its first epoch's training state is on disk: the rerun says it resumes
    there (not from epoch 0) and leaves the uninterrupted run's checkpoint metrics."""
    root, data = shared
    w = workloads(data)[1]
    assert w.name == "pretrain"
    expected, _ = reference(w, root)
    work = root / "kill-pretrain-epoch"
    fresh_work(work, root, 40)
    _, killed, _ = run(workload_argv(w, work, root), root, kill_when=work / "out" / "fit_state.pt")
    assert killed
    _, _, err = run(workload_argv(w, work, root), root)
    assert "resuming training after epoch" in err, err
    assert w.result(work) == expected
    assert not (work / "out" / "fit_state.pt").exists()  # gone once the checkpoint is written


def test_two_studies_sharing_one_cache_both_complete_with_equal_results(tmp_path):
    """Both need the same dataset: one builds it, the other waits on the directory lock and
    reuses it; neither reads a half-written file."""
    codes, errs, results = two_studies_one_cache(tmp_path)
    assert codes == [0, 0], errs
    assert results[0] == results[1] and all(r["status"] == "ok" for r in results[0])
    datasets = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(datasets) == 1  # one dataset, built once, shared
