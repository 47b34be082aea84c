"""The bundled server as a child process, sampled for CPU and memory while a benchmark runs.

Benchmarks run the server in its own process so the load generator's CPU is not counted as the
server's, and so the figures match what ``sagelab serve`` does in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sagelab.bench.stats import Summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ResourceSampler:
    """Samples a process's CPU (% of one core) and RSS every ``interval`` seconds."""

    pid: int
    interval: float = 0.5
    cpu: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ResourceSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            proc.cpu_percent(None)
            while not self._stop.wait(self.interval):
                self.cpu.append(proc.cpu_percent(None))
                self.rss_mb.append(proc.memory_info().rss / 2**20)
                self.times.append(time.monotonic())
        except psutil.Error:
            return

    def summary(self) -> dict[str, object]:
        return {
            "cpu_percent": Summary.of(self.cpu).as_dict(1),
            "rss_mb": {
                "start": round(self.rss_mb[0], 1) if self.rss_mb else None,
                "max": round(max(self.rss_mb), 1) if self.rss_mb else None,
                "end": round(self.rss_mb[-1], 1) if self.rss_mb else None,
            },
        }


class ServerProcess:
    """``with ServerProcess(config_path, max_sessions=100) as srv: srv.http_url``"""

    def __init__(
        self,
        config: str | Path | None = None,
        *,
        max_sessions: int | None = None,
        store_path: str | None = None,
        log_path: str | Path | None = None,
        agents: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.http_url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "sagelab", "serve", "--port", str(self.port)]
        if config is not None:
            cmd += ["--config", str(config)]
        if max_sessions is not None:
            cmd += ["--max-sessions", str(max_sessions)]
        if store_path is not None:
            cmd += ["--store", store_path]
        for agent in agents or []:
            cmd += ["--agent", agent]
        self.cmd = cmd
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        log = self.log_path.open("wb") if self.log_path else None
        out = log if log is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.proc.returncode}: {' '.join(self.cmd)}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1) as r,
            ):
                if json.loads(r.read()).get("status") == "ok":
                    return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("server did not become healthy within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid
