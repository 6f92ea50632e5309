"""Executor for independent tasks: local processes by default, Ray when asked.

`run_tasks(fn, items, workers=..., backend=...)` yields `(index, result)` as tasks finish (in
completion order), so callers can persist each result at once and resume after an interruption.
`fn` must be a module-level function of an importable module (picklable). Exceptions inside a
task are the task's business: callers that must survive a crashing task catch inside `fn` and
return the reason. A worker process that dies under a task (killed, out of memory) is another
matter: Ray first retries the task on a new worker (`RAY_TASK_RETRIES` times); then, or at once
with the local pool, the task is lost. With `on_lost`, `run_tasks` yields `on_lost(item, reason)`
for every lost task and goes on; without it, it raises `WorkerLost`.

`deferred_interrupts()` holds Ctrl-C and SIGTERM while native code that calls back into Python
runs (Ipopt through cyipopt), and delivers them when it returns.

Worker processes never import the caller's `__main__` (a script, `python -` on stdin, a
notebook): a script that calls gridtune at top level, without an `if __name__ == "__main__":`
guard, must not run again in every worker (it would start its own pool, or wait forever on a
dataset lock its parent holds). See `_WorkerContext`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from gridtune.errors import GridtuneError, choices_text

Backend = Literal["local", "ray"]
BACKENDS = ("local", "ray")
RAY_TASK_RETRIES = 2  # a task whose Ray worker died runs again this many times
RAY_START_ATTEMPTS = 3  # local Ray node start-ups tried before giving up


class WorkerLost(GridtuneError):
    """A worker process died while running a task (killed, out of memory)."""


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to their handlers.

    For native code that calls back into Python: an interrupt raised inside such a callback
    (Python runs signal handlers between bytecodes, so in the callback) leaves the native solver
    without the values it asked for. Measured with Ipopt: 3 of 30 SIGTERMs sent to a one-worker
    case9 build ended in a segmentation fault instead of the clean stop. Ignored signals stay
    ignored; outside the main thread (where handlers cannot be set) the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is None or handler == signal.SIG_IGN:  # None: installed outside Python
            continue
        previous[sig] = handler
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(held):  # each held signal once, in arrival order
            signal.raise_signal(signum)


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
    on_lost: Callable[[Any, str], Any] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run `fn(item)` for every item; yield `(index, result)` as each finishes.

    Args:
        fn: picklable function of one argument, defined in an importable module (not in the
            `__main__` script: local workers never import it).
        items: the task inputs.
        workers: number of processes (default: all cores). `1` runs in this process, in order.
        backend: `"local"` (process pool) or `"ray"` (a Ray cluster; a local one is started
            when none is running).
        chunksize: items per Ray task / process-pool submission, to amortise overhead.
        on_lost: `(item, reason) -> result` for a task whose worker process died; without it
            such a task raises `WorkerLost`.
    """
    backend = check_backend(backend)
    workers = check_workers(workers)
    if not items:
        return
    chunks = [list(range(i, min(i + chunksize, len(items)))) for i in range(0, len(items), chunksize)]
    if backend == "ray":
        yield from _run_ray(fn, items, chunks, workers, on_lost)
        return
    if workers == 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    if getattr(fn, "__module__", None) == "__main__":
        raise GridtuneError(f"run_tasks: `{getattr(fn, '__qualname__', fn)}` is defined in the "
                            "`__main__` script, which worker processes never import; move it "
                            "into a module")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=worker_context())
    finished = False
    try:
        futures = {pool.submit(_run_chunk, fn, [items[i] for i in c]): c for c in chunks}
        for fut in as_completed(futures):
            # dropped once yielded: a finished future holds its results, and the caller may
            # write them away (a dataset build) rather than keep them all
            indices = futures.pop(fut)
            try:
                results = fut.result()
            except BrokenProcessPool as exc:  # a worker died: this pool's unfinished tasks are lost
                yield from _lost(items, indices, f"worker process died ({exc})", on_lost)
                continue
            del fut
            for i, res in zip(indices, results):
                yield i, res
            del results
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, failed or abandoned: stop the workers now, not after their tasks
            _terminate(pool)


# Modules the fork server imports once, so that every worker forked from it starts with them
# (the task functions live there). Never `__main__`: see `_WorkerContext`.
FORKSERVER_PRELOAD = ("gridtune.parallel", "gridtune.grids.build", "gridtune.grids.calibration")

_launching = threading.local()
_context: multiprocessing.context.ForkServerContext | None = None
_context_lock = threading.Lock()


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver process started without the parent's `__main__`.

    multiprocessing hands every new process "preparation data" naming the parent's main module
    (`init_main_from_path`: a script's path, or `<stdin>` for `python -`; `init_main_from_name`
    for `python -m`), and the child runs that module again as `__mp_main__` before it unpickles
    its task. A script without a `__main__` guard then re-runs its top level in every worker (and
    `<stdin>` cannot be re-read at all). While this class launches a process, the preparation data
    leave the main module out; the task functions are module-level gridtune functions, imported
    by name when they are unpickled.
    """

    @staticmethod
    def _Popen(process_obj):  # noqa: N802  (multiprocessing's name)
        _launching.active = True
        try:
            return multiprocessing.context.ForkServerProcess._Popen(process_obj)
        finally:
            _launching.active = False


class _WorkerContext(multiprocessing.context.ForkServerContext):
    """The forkserver start method with `_WorkerProcess` as its process class.

    forkserver, not fork: forking a parent that already runs threads (torch, Ray, a previous
    pool) can copy a held lock into the child, which then sleeps forever (seen in studies).
    """

    Process = _WorkerProcess


def _preparation_data(name: str, _original=multiprocessing.spawn.get_preparation_data) -> dict:
    data = _original(name)
    if getattr(_launching, "active", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def worker_context() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context of gridtune's local pools (created once).

    The fork server preloads `FORKSERVER_PRELOAD` instead of the default `__main__` (which a
    fork server started before this call keeps; the preparation data still leave `__main__`
    out of every worker).
    """
    global _context
    with _context_lock:
        if _context is None:
            if multiprocessing.spawn.get_preparation_data is not _preparation_data:
                # the wrapper changes nothing unless `_WorkerProcess` is launching
                multiprocessing.spawn.get_preparation_data = _preparation_data
            context = _WorkerContext()
            context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
            _context = context
        return _context


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


def _lost(items: Sequence[Any], indices: list[int], reason: str,
          on_lost: Callable[[Any, str], Any] | None) -> Iterator[tuple[int, Any]]:
    if on_lost is None:
        raise WorkerLost(f"{reason}; finished tasks are kept, rerun to resume")
    for i in indices:
        yield i, on_lost(items[i], reason)


def start_ray(workers: int, attempts: int = RAY_START_ATTEMPTS) -> None:
    """Start a local Ray node with `workers` CPUs, trying again when it fails to come up.

    Ray waits a fixed 30 s for its raylet to register; on a loaded machine (two cores and a test
    suite) that start-up can time out although nothing is wrong. Each failed start is shut down
    cleanly before the next; after `attempts` the reason is raised as one `GridtuneError`.
    """
    import ray

    last: Exception | None = None
    for _ in range(attempts):
        try:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, ignore_reinit_error=True)
            return
        except Exception as exc:  # Ray raises a bare Exception when its node does not start
            last = exc
            ray.shutdown()
    raise GridtuneError(f"Ray could not start a local node in {attempts} attempts ({last}); "
                        "rerun when the machine is less loaded, or use --backend local")


def _run_ray(fn: Callable[[Any], Any], items: Sequence[Any], chunks: list[list[int]], workers: int,
             on_lost: Callable[[Any, str], Any] | None = None) -> Iterator[tuple[int, Any]]:
    import ray

    if not ray.is_initialized():
        start_ray(workers)
    from ray.exceptions import RayError, RayTaskError

    remote_chunk = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(_run_chunk)
    fn_ref = ray.put(fn)
    pending = {remote_chunk.remote(fn_ref, [items[i] for i in c]): c for c in chunks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            idx = pending.pop(ref)
            try:
                results = ray.get(ref)
            except RayTaskError:  # raised by `fn` itself: the caller's business, as locally
                raise
            except RayError as exc:  # the worker died, and its retries too
                reason = (f"Ray worker died {RAY_TASK_RETRIES + 1} times running this task "
                          f"({type(exc).__name__})")
                yield from _lost(items, idx, reason, on_lost)
                continue
            yield from zip(idx, results)
