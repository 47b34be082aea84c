"""``sagelab loadtest-worker``: locust worker processes on this machine join a master elsewhere.

A worker needs nothing from the master's machine but its address: the users and the speech
come from this installed package, the settings (agent, silence, speech if it is not a bundled
one) from the master as the worker joins, and the target's URL with every spawn message. A
locust worker is one process on one core, so ``processes`` should be about the number of
cores this machine can give; each writes what it measured, as it counted it, into ``out_dir``
(``worker-<pid>.json``), while everything it measured goes to the master over locust's own
connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagelab.loadtest.locustproc import DEFAULT_PORT, packaged_locustfiles, worker_argv


def parse_master(text: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (host, port); the port defaults to 5557."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"--master needs a host, got {text!r}")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"--master port must be a number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"--master port out of range: {number}")
    return host, number


@dataclass
class WorkerOptions:
    master_host: str
    master_port: int = DEFAULT_PORT
    processes: int = 1
    out_dir: Path = Path(".")
    source_address: str | None = None
    name: str | None = None

    def check(self) -> None:
        if self.processes < 1:
            raise ValueError(f"--processes must be at least 1, got {self.processes}")


@dataclass
class WorkerResult:
    exit_codes: list[int]
    tallies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(code in (0, 1) for code in self.exit_codes)


def run_worker(opts: WorkerOptions) -> WorkerResult:
    """Start the worker processes, wait until the master ends the run, gather their tallies."""
    opts.check()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    for old in opts.out_dir.glob("worker-*.json"):
        old.unlink()
    base_name = opts.name or os.uname().nodename
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    with packaged_locustfiles(shape=False) as files:
        try:
            for i in range(1, opts.processes + 1):
                env = {k: v for k, v in os.environ.items() if not k.startswith("SAGELAB_")}
                env["SAGELAB_WORKER_DIR"] = str(opts.out_dir.resolve())
                env["SAGELAB_WORKER_NAME"] = f"{base_name}-{i}"
                if opts.source_address:
                    env["SAGELAB_SOURCE_ADDRESS"] = opts.source_address
                log = (opts.out_dir / f"locust-worker-{i}.log").open("wb")
                logs.append(log)
                argv = worker_argv(files, opts.master_host, opts.master_port)
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
            codes = [proc.wait() for proc in procs]
        except KeyboardInterrupt:
            # Locust's own Ctrl-C: the workers got SIGINT too; let them send what they have.
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            codes = [proc.wait() for proc in procs]
        finally:
            for log in logs:
                log.close()
    tallies = [json.loads(p.read_text()) for p in sorted(opts.out_dir.glob("worker-*.json"))]
    return WorkerResult(codes, tallies)
