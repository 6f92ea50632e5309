"""Executor for independent tasks: local processes by default, Ray when asked.

`run_tasks(fn, items, workers=..., backend=...)` yields `(index, result)` as tasks finish (in
completion order), so callers can persist each result at once and resume after an interruption.
`fn` must be a module-level function (picklable). Exceptions inside a task are the task's
business: callers that must survive a crashing task catch inside `fn` and return the reason.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal

from gridtune.errors import GridtuneError, choices_text

Backend = Literal["local", "ray"]
BACKENDS = ("local", "ray")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def check_backend(backend: str) -> Backend:
    if backend not in BACKENDS:
        raise GridtuneError(f"unknown backend `{backend}`; valid: {choices_text(BACKENDS)}")
    return backend  # type: ignore[return-value]


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if workers < 1:
        raise GridtuneError(f"--workers must be at least 1, got `{workers}`")
    return workers


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int | None = None,
    backend: str = "local",
    chunksize: int = 1,
) -> Iterator[tuple[int, Any]]:
    """Run `fn(item)` for every item; yield `(index, result)` as each finishes.

    Args:
        fn: picklable function of one argument.
        items: the task inputs.
        workers: number of processes (default: all cores). `1` runs in this process, in order.
        backend: `"local"` (process pool) or `"ray"` (a Ray cluster; a local one is started
            when none is running).
        chunksize: items per Ray task / process-pool submission, to amortise overhead.
    """
    backend = check_backend(backend)
    workers = check_workers(workers)
    if not items:
        return
    chunks = [list(range(i, min(i + chunksize, len(items)))) for i in range(0, len(items), chunksize)]
    if backend == "ray":
        yield from _run_ray(fn, items, chunks, workers)
        return
    if workers == 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    # forkserver, not fork: forking a parent that already runs threads (torch, Ray, a previous
    # pool) can copy a held lock into the child, which then sleeps forever (seen in studies).
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    finished = False
    try:
        futures = {pool.submit(_run_chunk, fn, [items[i] for i in c]): c for c in chunks}
        for fut in as_completed(futures):
            for i, res in zip(futures[fut], fut.result()):
                yield i, res
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, failed or abandoned: stop the workers now, not after their tasks
            _terminate(pool)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the worker processes of `pool` at once.

    `shutdown(wait=True)` (what `with` does) waits for running tasks, which for a dataset build
    or a study cell can be many minutes after the user asked to stop; and a worker left running
    after its parent exits keeps a core busy for nothing. Finished results were already yielded.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(item) for item in chunk]


def _run_ray(fn: Callable[[Any], Any], items: Sequence[Any], chunks: list[list[int]], workers: int
             ) -> Iterator[tuple[int, Any]]:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    remote_chunk = ray.remote(num_cpus=1)(_run_chunk)
    fn_ref = ray.put(fn)
    pending = {remote_chunk.remote(fn_ref, [items[i] for i in c]): c for c in chunks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            idx = pending.pop(ref)
            yield from zip(idx, ray.get(ref))
