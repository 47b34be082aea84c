"""Locust as child processes: a master, and worker processes on this machine or on others.

Locust monkey-patches the standard library for gevent on import, so it never runs inside
sagelab's own process. Every run uses locust's distributed mode, even on one machine: a
master (``--master``, which runs no users) and workers (``--worker``) joining it by host and
port, on loopback or from other machines (``sagelab loadtest-worker``). One code path means a
run on one laptop measures exactly the way a run across ten generator machines does; the
master is cheap (it only counts and writes what workers send).

The master is not given ``--run-time``: :mod:`sagelab.loadtest.locustplugin` ends the run
itself (``SAGELAB_RUN_TIME_S``) so that every worker's last measurements arrive first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

#: locust's own default master port.
DEFAULT_PORT = 5557


@contextlib.contextmanager
def packaged_locustfiles(shape: bool) -> Iterator[list[Path]]:
    """The users (and the step shape) as files, read from the installed package."""
    package = resources.files("sagelab.loadtest")
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(resources.as_file(package / "locustfile.py"))]
        if shape:
            files.append(stack.enter_context(resources.as_file(package / "step_shape.py")))
        yield files


def locust_base(locustfiles: list[Path]) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", ",".join(str(f) for f in locustfiles)]


def worker_argv(locustfiles: list[Path], master_host: str, master_port: int) -> list[str]:
    """One locust worker joining a master (the master names the user class to run)."""
    return [
        *locust_base(locustfiles),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]


def connect_host(bind_host: str) -> str:
    """Where a worker on this machine reaches a master bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in ("*", "0.0.0.0", "", "::") else bind_host


@dataclass
class LocustRun:
    """A master plus ``local_workers`` worker processes here; ``remote_workers`` more are
    expected to join from elsewhere. ``users``/``run_time_s`` are unused with a shape."""

    locustfiles: list[Path]
    user_class: str
    host: str
    run_dir: Path
    env: dict[str, str]
    users: int = 1
    spawn_rate: float = 1.0
    run_time_s: float | None = None
    local_workers: int = 1
    remote_workers: int = 0
    bind_host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers_wait_s: float = 60.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def expected_workers(self) -> int:
        return self.local_workers + self.remote_workers

    def raw_logs(self) -> list[Path]:
        """The master's per-worker logs of what it received (workers numbered as they join)."""
        return sorted(self.run_dir.glob("raw-*.jsonl"))

    def master_argv(self) -> list[str]:
        cmd = [*locust_base(self.locustfiles), "--headless", "--host", self.host]
        cmd += ["--csv", str(self.run_dir / "locust"), "--only-summary"]
        if self.run_time_s is not None:
            cmd += ["-u", str(self.users), "-r", str(self.spawn_rate)]
        cmd += ["--master", "--master-bind-host", self.bind_host]
        cmd += ["--master-bind-port", str(self.port)]
        cmd += ["--expect-workers", str(self.expected_workers)]
        cmd += ["--expect-workers-max-wait", f"{self.workers_wait_s:g}", self.user_class]
        return cmd

    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        """(log name, argv, extra environment) per process; the master first."""
        master_env = self.env | {"SAGELAB_RUN_DIR": str(self.run_dir.resolve())}
        if self.run_time_s is not None:
            master_env["SAGELAB_RUN_TIME_S"] = repr(self.run_time_s)
        out = [("locust-master", self.master_argv(), master_env)]
        for i in range(1, self.local_workers + 1):
            # The users only: a shape runs on the master (and needs settings workers lack).
            users = self.locustfiles[:1]
            argv = worker_argv(users, connect_host(self.bind_host), self.port)
            extra = {"SAGELAB_WORKER_NAME": f"local-{i}"}
            if "SAGELAB_API_KEY" in self.env:  # this machine's own workers: no network hop
                extra["SAGELAB_API_KEY"] = self.env["SAGELAB_API_KEY"]
            out.append((f"locust-worker-{i}", argv, extra))
        return out

    def start(self) -> LocustRun:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SAGELAB_")}
        for name, argv, extra in self.commands():
            log = (self.run_dir / f"{name}.log").open("wb")
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=clean | extra)
            )
        return self

    @property
    def master(self) -> subprocess.Popen[bytes]:
        return self.procs[0]

    def running(self) -> bool:
        return self.master.poll() is None

    def stop(self) -> None:
        """End the test early the way its end does (workers stop and send what they have):
        SIGUSR1, which :mod:`sagelab.loadtest.locustplugin` handles on the master."""
        if self.running():
            self.master.send_signal(signal.SIGUSR1)

    def wait(self, timeout: float) -> int:
        """The master's exit code, once every process has ended (killed after ``timeout``)."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        return self.master.returncode

    def log_tail(self, chars: int = 2000) -> str:
        path = self.run_dir / "locust-master.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""
