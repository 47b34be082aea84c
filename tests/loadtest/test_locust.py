"""``sagelab loadtest`` end to end: CLI → server process → locust subprocess → summary."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# Only look for the packages: importing locust would gevent-patch threads in this process
# and break every threaded test after it (locust runs in a subprocess here).
if importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None:
    pytest.skip("install the 'loadtest' extra", allow_module_level=True)

USERS = 3


def test_three_users_eight_seconds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagelab",
            "loadtest",
            "--users",
            str(USERS),
            "--spawn-rate",
            str(USERS),
            "--run-time",
            "8s",
            "--json",
            "--out",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["failures"] == 0, summary["error_samples"]
    assert summary["thresholds"]["violations"] == []
    metrics = summary["metrics"]
    for name in ("connect", "metadata", "ping_rtt", "first_audio"):
        # Every user connected, got pings answered and heard a reply to its first utterance
        # (speech ends at ~2.4 s; the scripted agent answers after 500 ms of silence).
        assert metrics[name]["users_with_samples"] == USERS, (name, metrics[name])
    assert metrics["connect"]["n"] == USERS
    assert 400 < metrics["first_audio"]["p50"] < 1000
    assert metrics["send_lateness"]["n"] > USERS * 50  # ~10 chunks/s each for ~7 s
    assert summary["server"]["rss_mb"]["max"] > 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "raw.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text())["failures"] == 0
