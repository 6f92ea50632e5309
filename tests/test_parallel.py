import math

import pytest

from gridtune.errors import GridtuneError
from gridtune.parallel import run_tasks


def square(x: int) -> int:
    return x * x


def test_local_pool_returns_every_result_with_its_index():
    got = dict(run_tasks(square, list(range(10)), workers=2, chunksize=3))
    assert got == {i: i * i for i in range(10)}


def test_single_worker_runs_in_order():
    assert [i for i, _ in run_tasks(square, [5, 6, 7], workers=1)] == [0, 1, 2]


def test_bad_backend_and_workers():
    with pytest.raises(GridtuneError, match=r"unknown backend `spark`; valid: `local`, `ray`"):
        list(run_tasks(square, [1], backend="spark"))
    with pytest.raises(GridtuneError, match=r"--workers must be at least 1, got `0`"):
        list(run_tasks(square, [1], workers=0))


@pytest.mark.slow
def test_ray_backend_matches_local():
    import ray

    try:
        # a library function: Ray workers cannot import functions defined in test modules
        got = dict(run_tasks(math.factorial, list(range(7)), workers=2, backend="ray", chunksize=2))
    finally:
        ray.shutdown()
    assert got == {i: math.factorial(i) for i in range(7)}
