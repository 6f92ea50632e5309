"""Running the rounds on Flower: in-process simulation, or a server and one process per site.

`simulate` runs Flower's simulation runtime (`flwr.simulation.run_simulation`; its Ray backend
runs the clients); `loopback` starts Flower's gRPC server on 127.0.0.1 at a free port in this
process and one client process per site (`python -m gridtune.federated.node`), as separate
operators would run them. Both drive the same strategy object (`server.make_strategy`) and the
same client (`client.make_client`), so they give the same global model for a seed.

A site that fails mid-round (its process killed, an error, no answer within `round_timeout_s`)
is reported in the round's record; with `on_client_failure = "retry"` a loopback site's process is
restarted and joins again from the next round, with `drop` it takes no further part.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridtune.federated.client import Job, client_for_context


def _quiet_flower() -> None:
    """Flower logs every round and its deprecation notices; failed sites are reported in the
    run's own records, so only Flower's errors are shown."""
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)


def simulate(job: Job, strategy: Any) -> None:
    """All rounds in Flower's simulation runtime, one virtual node per site."""
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    _quiet_flower()
    config = ServerConfig(num_rounds=job.spec.rounds, round_timeout=job.spec.round_timeout_s)
    server = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy, config=config))
    clients = ClientApp(client_fn=functools.partial(client_for_context, job))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Ray's notice about accelerator variables
        run_simulation(server_app=server, client_app=clients, num_supernodes=len(job.site_dirs),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": min(2, os.cpu_count() or 1),
                                                     "include_dashboard": False, "log_to_driver": False}})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nodes:
    """The site processes of a loopback run; a supervisor thread restarts dead ones under `retry`."""

    def __init__(self, job_path: Path, address: str, n_sites: int, retry: bool, log_dir: Path) -> None:
        self.job_path, self.address, self.retry, self.log_dir = job_path, address, retry, log_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, int] = {i: 0 for i in range(n_sites)}
        self.exits: list[dict[str, int]] = []
        self._stop = threading.Event()
        for i in range(n_sites):
            self._start(i)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _start(self, index: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH", "")] if p)}
        log = (self.log_dir / f"site-{index}.log").open("ab")
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "gridtune.federated.node", "--server", self.address, "--job",
             str(self.job_path), "--site", str(index)], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for i, p in list(self.procs.items()):
                code = p.poll()
                if code is not None and code != 0 and not self._stop.is_set():
                    self.exits.append({"site": i, "exit_code": code})
                    del self.procs[i]
                    if self.retry:
                        self.restarts[i] += 1
                        self._start(i)

    def kill(self, index: int) -> None:
        """End site `index`'s process at once (SIGKILL), as a crashed operator would."""
        proc = self.procs.get(index)
        if proc is not None:
            proc.kill()

    def stop(self, grace_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join()
        for i, p in list(self.procs.items()):  # died after the watcher's last look (a fast round)
            code = p.poll()
            if code is not None and code != 0:
                self.exits.append({"site": i, "exit_code": code})
                del self.procs[i]
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def loopback(job: Job, strategy: Any, work_dir: Path,
             on_nodes: Callable[[Nodes], None] | None = None) -> dict[str, Any]:
    """All rounds with Flower's gRPC server in this process and one client process per site on
    127.0.0.1. `on_nodes` receives the running `Nodes` (a test kills one through it).
    Returns the processes' exits and restarts."""
    from flwr.server import ServerConfig, start_server

    _quiet_flower()
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path = work_dir / "job.json"
    job_path.write_text(json.dumps(job.to_dict()))
    address = f"127.0.0.1:{free_port()}"
    nodes = Nodes(job_path, address, len(job.site_dirs), job.spec.on_client_failure == "retry", work_dir)
    if on_nodes is not None:
        on_nodes(nodes)
    try:
        start_server(server_address=address, strategy=strategy,
                     config=ServerConfig(num_rounds=job.spec.rounds, round_timeout=job.spec.round_timeout_s))
    finally:
        nodes.stop()
    return {"address": address, "exits": nodes.exits, "restarts": nodes.restarts}
