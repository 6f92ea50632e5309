"""A worker process killed under a task (SIGKILL, as the OOM killer does): with the local pool
the task is lost and reported through `on_lost`; on Ray it is retried on a new worker, and
reported lost only when every retry died too. Real processes, real signals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gridtune.parallel import RAY_TASK_RETRIES, WorkerLost, run_tasks


def die_on(item: tuple[int, str]) -> int:
    """Kill this worker on item 0 (every time), else square."""
    i, _ = item
    if i == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return i * i


def die_once(item: tuple[int, str]) -> int:
    """Kill this worker the first time item 0 runs (a marker file remembers), else square."""
    i, marker = item
    if i == 0 and not Path(marker).exists():
        Path(marker).write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return i * i


def test_local_pool_reports_the_lost_task_and_keeps_the_others(tmp_path):
    items = [(i, str(tmp_path / "m")) for i in range(4)]
    got = dict(run_tasks(die_on, items, workers=2, on_lost=lambda item, why: f"lost: {why}"))
    assert set(got) == {0, 1, 2, 3}
    assert str(got[0]).startswith("lost: worker process died")
    # a broken pool loses the tasks still running beside the killed one; none is silently dropped
    assert all(got[i] == i * i or str(got[i]).startswith("lost: worker process died")
               for i in (1, 2, 3))
    with pytest.raises(WorkerLost, match=r"worker process died .*; finished tasks are kept, rerun to resume"):
        list(run_tasks(die_on, items, workers=2))


@pytest.mark.slow
def test_ray_retries_a_killed_worker_then_reports_the_task_lost(tmp_path):
    ray = pytest.importorskip("ray")
    try:
        items = [(i, str(tmp_path / "once")) for i in range(3)]
        assert dict(run_tasks(die_once, items, workers=1, backend="ray")) == {0: 0, 1: 1, 2: 4}
        assert (tmp_path / "once").read_text() == "died once"  # it did die, and was retried
        got = dict(run_tasks(die_on, items, workers=1, backend="ray",
                             on_lost=lambda item, why: f"lost: {why}"))
        assert (got[1], got[2]) == (1, 4)
        assert str(got[0]).startswith(f"lost: Ray worker died {RAY_TASK_RETRIES + 1} times "
                                      "running this task")
    finally:
        ray.shutdown()
