"""Hard kills at seeded random moments (reduced sweep): a build, pre-training, fine-tuning and a
study are SIGKILLed with their workers, run again, and must leave what an uninterrupted run
leaves (dataset content hash, checkpoint metrics, study results), every file sealed and whole.
The full sweep (>= 20 kill points) is `benchmarks/bench_faults.py`."""

from __future__ import annotations

import random

import pytest

from tests.faults import kill_and_resume, prepare, reference, two_studies_one_cache, workloads

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


def test_two_studies_sharing_one_cache_both_complete_with_equal_results(tmp_path):
    """Both need the same dataset: one builds it, the other waits on the directory lock and
    reuses it; neither reads a half-written file."""
    codes, errs, results = two_studies_one_cache(tmp_path)
    assert codes == [0, 0], errs
    assert results[0] == results[1] and all(r["status"] == "ok" for r in results[0])
    datasets = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(datasets) == 1  # one dataset, built once, shared
