"""Locust as child processes: one standalone process, or a master and workers on loopback.

Locust monkey-patches the standard library for gevent on import, so it never runs inside
sagelab's own process. A single locust process is one core at most; with ``workers >= 2``
this uses locust's own distributed mode (``--master`` with ``--expect-workers``, ``--worker``
processes connecting to it on 127.0.0.1), exactly as one would across machines, and each
worker writes its own raw log (``SAGELAB_WORKER`` numbers them) for the runner to merge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sagelab.bench.serverproc import free_port


@dataclass
class LocustRun:
    """Everything the locust command lines need; ``users``/``run_time`` unused with a shape."""

    locustfiles: list[Path]
    user_class: str
    host: str
    run_dir: Path
    env: dict[str, str]
    users: int = 1
    spawn_rate: float = 1.0
    run_time: str | None = None
    workers: int = 1
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.workers >= 2

    def raw_logs(self) -> list[Path]:
        n = self.workers if self.distributed else 1
        return [self.run_dir / f"raw-{i}.jsonl" for i in range(1, n + 1)]

    def _base(self) -> list[str]:
        files = ",".join(str(f) for f in self.locustfiles)
        return [sys.executable, "-m", "locust", "-f", files]

    def _load(self) -> list[str]:
        cmd = ["--headless", "--host", self.host, "--csv", str(self.run_dir / "locust")]
        cmd += ["--only-summary"]
        if self.run_time is not None:
            cmd += ["-u", str(self.users), "-r", str(self.spawn_rate), "-t", self.run_time]
        return cmd

    def commands(self, master_port: int | None = None) -> list[tuple[str, list[str], int]]:
        """(log name, argv, worker number) per process; the master or standalone one first."""
        if not self.distributed:
            return [("locust", [*self._base(), *self._load(), self.user_class], 1)]
        port = str(master_port or 5557)
        master = [*self._base(), *self._load(), "--master", "--master-bind-host", "127.0.0.1"]
        master += ["--master-bind-port", port, "--expect-workers", str(self.workers)]
        master += ["--expect-workers-max-wait", "60", self.user_class]
        out = [("locust-master", master, 0)]
        for i in range(1, self.workers + 1):
            worker = [*self._base(), "--worker", "--master-host", "127.0.0.1"]
            worker += ["--master-port", port, self.user_class]
            out.append((f"locust-worker-{i}", worker, i))
        return out

    def start(self) -> LocustRun:
        port = free_port() if self.distributed else None
        for name, argv, worker in self.commands(port):
            env = os.environ | self.env | {"SAGELAB_WORKER": str(worker)}
            env.pop("SAGELAB_RAW_LOG", None)  # the master runs no users
            if worker:
                env["SAGELAB_RAW_LOG"] = str(self.raw_logs()[worker - 1].resolve())
            log = (self.run_dir / f"{name}.log").open("wb")
            self._logs.append(log)
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        return self

    @property
    def leader(self) -> subprocess.Popen[bytes]:
        """The process that runs the test: the master, or the only one."""
        return self.procs[0]

    def running(self) -> bool:
        return self.leader.poll() is None

    def stop(self) -> None:
        """End the test early, as Ctrl-C would: locust treats it like the end of the run time
        (users stop, the master tells its workers to quit, statistics are written). SIGTERM
        would not do: during a shape test locust has not installed its handler for it yet."""
        if self.running():
            self.leader.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        """The leader's exit code, once every process has ended (killed after ``timeout``)."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        return self.leader.returncode

    def log_tail(self, chars: int = 2000) -> str:
        name = "locust-master" if self.distributed else "locust"
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""
