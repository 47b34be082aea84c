"""``sagelab bench network`` end to end: the CLI, a server process, sessions behind netem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def sagelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagelab", "bench", "network", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO,
    )


def test_one_turn_per_network_shows_the_added_latency() -> None:
    proc = sagelab(
        "--network", "ideal", "--network", "latency=150", "--turns", "1", "--sessions", "1",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    ideal, slow = report["networks"]
    assert (ideal["network"], slow["network"]) == ("ideal", "custom-2")
    assert slow["conditions"]["latency_ms"] == 150
    assert slow["conditions"]["seed"] == 1  # the default seed, for reproducible jitter/loss
    for row in (ideal, slow):
        assert row["errors"] == [] and row["sessions"] == 1 and row["turns"] == 1
        assert row["chunk_gap_ms"]["count"] > 10  # a reply of several 100 ms chunks
    # Speech reaches the server 150 ms later and the reply comes back 150 ms later; the
    # scripted agent's 500 ms silence window is the same on both (see test_session).
    assert slow["voice_to_voice_ms"]["p50"] >= 450 + 280
    assert 280 <= slow["ping_ms"]["p50"] <= 600
    assert ideal["ping_ms"]["p50"] < 280


def test_a_bad_network_is_rejected_with_how_to_write_it() -> None:
    proc = sagelab("--network", "latency=50,loss=3", "--turns", "1")
    assert proc.returncode == 2
    assert "for 3 % write 0.03" in proc.stderr
    proc = sagelab("--network", "edge")
    assert proc.returncode == 2
    assert "unknown network preset 'edge'" in proc.stderr
