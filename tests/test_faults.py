"""Hard kills at seeded random moments (reduced sweep): a build, pre-training, fine-tuning and a
study are SIGKILLed with their workers, run again, and must leave what an uninterrupted run
leaves (dataset content hash, checkpoint metrics, study results), every file sealed and whole.
The full sweep (>= 20 kill points) is `benchmarks/bench_faults.py`."""

from __future__ import annotations

import random

import pytest

from tests.faults import kill_and_resume, prepare, reference, workloads

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
