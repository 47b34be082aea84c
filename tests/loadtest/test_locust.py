"""``sagelab loadtest`` end to end: CLI → server process → locust processes → summary.

Two short runs cover both protocols, signed URLs, the capacity search and locust's
master/worker mode; each takes ~15-20 s, mostly real-time speech.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Only look for the packages: importing locust would gevent-patch threads in this process
# and break every threaded test after it (locust runs in subprocesses here).
if importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None:
    pytest.skip("install the 'loadtest' extra", allow_module_level=True)


def _loadtest(run_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    # Its own process group: when the run times out (or pytest-timeout stops the test), the
    # server and locust processes the CLI started go with it instead of living on as orphans.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagelab", "loadtest", "--json", "--out", str(run_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=110)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    lines = stdout.strip().splitlines()
    output = stdout[-3000:] + stderr[-3000:]
    assert lines, output
    return proc.returncode, json.loads(lines[-1]), output


def test_convai_capacity_search_through_signed_urls(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rc, summary, output = _loadtest(
        run_dir,
        "--signed-url",
        "--step",
        "--step-users", "2",
        "--max-users", "4",
        "--step-time", "7s",
        "--spawn-rate", "4",
        # This checks the search, not the machine: a budget a loaded CI box always meets.
        "--max-p95-first-audio-ms", "5000",
        "--max-stutter-share", "1",
    )  # fmt: skip
    assert rc == 0, output
    assert summary["failures"] == 0, summary["error_samples"]
    metrics = summary["metrics"]
    # Every session went through get-signed-url (the server required it) and was answered.
    assert metrics["signed_url"]["n"] == metrics["connect"]["n"] == summary["sessions"] == 4
    for name in ("connect", "metadata", "ping_rtt", "ws_ping_rtt", "first_audio"):
        assert metrics[name]["users_with_samples"] == 4, (name, metrics[name])
    # The scripted agent answers 500 ms after the speech ends.
    assert 400 < metrics["first_audio"]["p50"] < 1000
    assert metrics["voice_to_voice"]["p50"] > metrics["first_audio"]["p50"]
    assert metrics["send_lateness"]["n"] > 4 * 50
    capacity = summary["capacity"]
    assert [s["users"] for s in capacity["steps"]] == [2, 4]
    assert all(s["figures"]["replies"] > 0 for s in capacity["steps"])
    assert capacity["sustainable_users"] == 4 and not capacity["budget_broken"]
    assert summary["server"]["rss_mb"]["max"] > 0
    for name in ("raw-1.jsonl", "steps.jsonl", "summary.json", "loadtest.png", "capacity.png"):
        assert (run_dir / name).is_file(), name


def test_relay_users_on_two_locust_workers(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rc, summary, output = _loadtest(
        run_dir,
        "--protocol", "relay",
        "--processes", "2",
        "--users", "4",
        "--spawn-rate", "4",
        "--run-time", "9s",
        "--relay-session-s", "5",
        # A healthy run against an impossible budget: it must say so and exit 1 (the rest
        # of the budget is one a loaded CI box always meets).
        "--max-p95-voice-to-voice-ms", "100",
        "--max-p95-first-audio-ms", "5000",
        "--max-stutter-share", "1",
    )  # fmt: skip
    assert rc == 1, output
    violations = summary["thresholds"]["violations"]
    assert len(violations) == 1 and violations[0].startswith("voice_to_voice p95"), violations
    assert summary["failures"] == 0, summary["error_samples"]
    assert summary["locust_workers"] == 2
    metrics = summary["metrics"]
    for name in ("connect", "metadata", "ws_ping_rtt", "first_audio", "audio_gap"):
        assert metrics[name]["users_with_samples"] == 4, (name, metrics[name])
    assert metrics["ping_rtt"]["n"] == 0  # the relay protocol has no application ping
    assert 400 < metrics["first_audio"]["p50"] < 1500
    # Each 5 s session ended with 'end' → 'complete' → 1000, and the user started another.
    assert summary["close_codes"].get("1000", 0) >= 4
    assert summary["sessions"] > 4
    for worker in (1, 2):
        raw = run_dir / f"raw-{worker}.jsonl"
        assert raw.is_file() and raw.stat().st_size > 0, raw
        assert (run_dir / f"locust-worker-{worker}.log").is_file()
