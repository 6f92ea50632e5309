import math

import pytest

from gridtune.errors import GridtuneError
from gridtune.parallel import deferred_interrupts, run_tasks


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


@pytest.mark.slow
def test_ray_start_that_keeps_failing_is_one_error_and_leaves_ray_startable():
    """Each failed start is shut down before the next try; a later start still works."""
    import ray

    from gridtune.parallel import start_ray

    with pytest.raises(GridtuneError, match=r"Ray could not start a local node in 2 attempts \(.*CPU"):
        start_ray(-1, attempts=2)  # a node Ray refuses to start
    assert not ray.is_initialized()
    try:
        start_ray(1)
        assert ray.cluster_resources().get("CPU") == 1.0
    finally:
        ray.shutdown()


def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def _processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds `marker` (Linux /proc)."""
    import os
    from pathlib import Path

    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if marker.encode() in (d / "environ").read_bytes():
                state = (d / "stat").read_text().split(")")[-1].split()[0]
                if state != "Z":
                    found.append(int(d.name))
        except OSError:
            continue
    return found


def test_abandoned_run_ends_its_workers_without_waiting_for_their_tasks():
    import time

    start = time.perf_counter()
    for _, first in run_tasks(nap, [0.1, 60.0, 60.0], workers=2):
        assert first == 0.1
        break  # the caller stops early (an error, Ctrl-C): the 60 s tasks must not be waited for
    assert time.perf_counter() - start < 30


def test_sigterm_stops_a_cli_run_and_its_worker_processes(tmp_path):
    """`kill PID` on a running gridtune command: clean stop, exit code 130, no orphaned workers."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    marker = f"GRIDTUNE_TEST_MARKER={uuid.uuid4().hex}"
    script = (
        "import sys\n"
        "from gridtune import cli\n"
        "from gridtune.parallel import run_tasks\n"
        "from tests.test_parallel import nap\n"
        "def run(args):\n"
        "    for _, r in run_tasks(nap, [0.1, 120.0, 120.0, 120.0], workers=2):\n"
        "        print('first', r, flush=True)\n"
        "parser = cli.build_parser\n"
        "def build():\n"
        "    p = parser()\n"
        "    p.set_defaults(func=run, command='test')\n"
        "    return p\n"
        "cli.build_parser = build\n"
        "sys.exit(cli.main([]))\n"
    )
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "first 0.1"
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=240)
    assert code == 130 and "interrupted; finished work is kept" in proc.stderr.read()
    deadline = time.time() + 15
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker) == []


# A user's script that calls gridtune at top level, without an `if __name__ == "__main__":`
# guard: local workers must not run it again (they would wait forever on the dataset build lock
# the script holds, and `python -` cannot even be re-read: BrokenProcessPool).
UNGUARDED_SCRIPT = """\
import os
with open(os.environ["GRIDTUNE_TEST_RUNS"], "a") as fh:
    fh.write(f"{os.getpid()}\\n")
from gridtune.grids.dataset import open_dataset
ds = open_dataset("case9", samples=8, workers=2, progress=False)
print("scenarios", len(ds))
"""


def _run_unguarded(tmp_path, *, stdin: bool):
    import os
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(UNGUARDED_SCRIPT)
    runs = tmp_path / "runs.log"
    env = {**os.environ, "GRIDTUNE_CACHE": str(tmp_path / "cache"), "GRIDTUNE_TEST_RUNS": str(runs)}
    if stdin:  # like a notebook or `python -`: an interactive `__main__` without a file
        with script.open() as fh:
            proc = subprocess.run([sys.executable, "-"], stdin=fh, cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=240)
    else:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "scenarios 8"
    assert len(runs.read_text().split()) == 1  # the script body ran once: in the caller only


@pytest.mark.slow
def test_workers_do_not_rerun_an_unguarded_script(tmp_path):
    _run_unguarded(tmp_path, stdin=False)


@pytest.mark.slow
def test_workers_do_not_rerun_a_script_read_from_stdin(tmp_path):
    _run_unguarded(tmp_path, stdin=True)


def test_task_function_from_main_is_refused_before_any_worker_starts():
    def local(x):
        return x

    local.__module__ = "__main__"
    with pytest.raises(GridtuneError, match=r"`__main__` script, which worker processes never "
                                            r"import"):
        list(run_tasks(local, [1, 2], workers=2))


def test_only_gridtune_workers_leave_main_out_of_their_preparation_data():
    import multiprocessing.spawn

    from gridtune.parallel import FORKSERVER_PRELOAD, worker_context

    worker_context()
    assert "__main__" not in FORKSERVER_PRELOAD
    data = multiprocessing.spawn.get_preparation_data("other")
    # any other process still gets the caller's main module (pytest's, here) as before
    assert {"init_main_from_name", "init_main_from_path"} & set(data)


def _interrupt_on(signum):
    def handler(received, frame):
        raise KeyboardInterrupt(received)

    return handler


def test_deferred_interrupts_deliver_a_signal_when_the_block_ends(monkeypatch):
    import os
    import signal

    old = signal.signal(signal.SIGTERM, _interrupt_on(signal.SIGTERM))
    try:
        ran = []
        with pytest.raises(KeyboardInterrupt) as stop:
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
                ran.append("after the signal")  # still inside: the handler waits for the end
        assert ran == ["after the signal"] and stop.value.args == (signal.SIGTERM,)
        assert signal.getsignal(signal.SIGTERM).__name__ == "handler"  # the caller's, restored
        with deferred_interrupts():  # nothing received: nothing delivered
            ran.append("quiet")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with deferred_interrupts():  # an ignored signal stays ignored
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
