"""How long a dropped connection costs a conversation that resumes.

A ``Session`` with a ``ReconnectPolicy`` talks to the ``scripted`` agent on an in-process
server; during the greeting its TCP connection is reset (``drop_connection``: SO_LINGER 0), and
it resumes. Measured on the client's clock, from the timeline: the reset → ``resumed`` (new
socket, handshake, the server re-attaching the held conversation), and ``resumed`` → the reply
to a typed turn (the conversation works again). With ``--backoff-ms 0`` the first attempt goes
at once, so the figure is the resume itself; the default policy waits 100-200 ms first.

    .venv/bin/python benchmarks/resume.py [--runs 30] [--backoff-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from sagelab.client import ReconnectPolicy, Session
from sagelab.config import load_config
from sagelab.server.app import SagelabServer


async def one_run(url: str, policy: ReconnectPolicy) -> tuple[float, float]:
    async with Session.connect(url, "scripted", reconnect=policy) as s:
        await s.wait_for("audio", timeout=10)
        await s.drop_connection()
        dropped = s.timeline.of_type("connection_dropped")[-1]
        resumed = await s.wait_for("resumed", timeout=30)
        mark = s.mark()
        await s.send_text("still there?")
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
        return (resumed.t_ns - dropped.t_ns) / 1e6, (reply.t_ns - resumed.t_ns) / 1e6


async def main(runs: int, backoff_ms: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, env={}, port=0, store_path=str(Path(tmp) / "store.sqlite3"))
        config.agents = [a for a in config.agents if a.id == "scripted"]
        policy = ReconnectPolicy(
            initial_backoff_s=backoff_ms / 1000, max_backoff_s=max(1.0, backoff_ms / 1000)
        )
        async with SagelabServer(config) as server:
            results = [await one_run(server.http_url, policy) for _ in range(runs)]
            assert server.sessions.held == 0
    resume, reply = (np.array(column) for column in zip(*results, strict=True))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"{runs} runs, first backoff {backoff_ms:g} ms (jitter 0.5), {machine}")
    for name, values in (("reset → resumed", resume), ("resumed → reply", reply)):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(
            f"{name:>16}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, "
            f"max {values.max():.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backoff-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.backoff_ms))
