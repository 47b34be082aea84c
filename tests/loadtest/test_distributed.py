"""A master and workers as separate processes, each on its own loopback address and in its own
working folder, as if each were its own machine: ``sagelab loadtest --expect-workers`` and
``sagelab loadtest-worker --master``, against the bundled server with the scripted agent.

Nothing is shared but the network: the master's summary must hold exactly what each worker
says it measured, and a worker killed mid-run must be reported, not silently dropped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None:
    pytest.skip("install the 'loadtest' extra", allow_module_level=True)

pytestmark = pytest.mark.load

MASTER = "127.0.0.5"
WORKER_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    """Each process in its own session (so a kill takes its locust children too) and folder."""
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGELAB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sagelab", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_until_all_report(run_dir: Path, workers: int, timeout_s: float = 90.0) -> None:
    """Until the master holds measurements from every worker: the run is under way."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [p for p in run_dir.glob("raw-*.jsonl") if p.stat().st_size > 0]
        if len(logs) == workers:
            return
        time.sleep(0.5)
    raise AssertionError(f"not every worker reported within {timeout_s:g} s")


def _run(
    tmp_path: Path, workers: int, run_time: str, kill_after_s: float | None = None
) -> tuple[int, dict[str, Any], list[Path], str]:
    """Master and workers; ``kill_after_s`` after every worker has reported, kill the last."""
    port = _free_port(MASTER)
    master = _start(
        ["loadtest", "--json", "--out", "run", "--bind", MASTER, "--port", str(port),
         "--processes", "0", "--expect-workers", str(workers),
         "--users", str(2 * workers), "--spawn-rate", str(2 * workers), "--run-time", run_time,
         # This checks the plumbing, not the machine: a budget a loaded CI box always meets.
         "--max-p95-first-audio-ms", "5000", "--max-stutter-share", "1"],
        tmp_path / "master",
    )  # fmt: skip
    folders = [tmp_path / f"worker-{i}" for i in range(1, workers + 1)]
    procs = []
    for i, folder in enumerate(folders, start=1):
        argv = ["loadtest-worker", "--master", f"{MASTER}:{port}", "--name", f"gen{i}"]
        argv += ["--source-address", WORKER_ADDRESSES[i - 1], "--out", "."]
        procs.append(_start(argv, folder))
    try:
        if kill_after_s is not None:
            _wait_until_all_report(tmp_path / "master" / "run", workers)
            time.sleep(kill_after_s)
            os.killpg(procs[-1].pid, signal.SIGKILL)  # the worker and its locust process
        out, _ = master.communicate(timeout=150)
        for proc in procs:
            proc.communicate(timeout=60)
    finally:
        for proc in [master, *procs]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    lines = out.strip().splitlines()
    assert lines and lines[-1].startswith("{"), out[-3000:]
    return master.returncode, json.loads(lines[-1]), folders, out[-3000:]


def _own_tally(folder: Path) -> dict[str, Any]:
    (path,) = folder.glob("worker-*.json")
    return dict(json.loads(path.read_text()))


def test_three_workers_on_their_own_addresses_add_up_to_one_summary(tmp_path: Path) -> None:
    rc, summary, folders, output = _run(tmp_path, workers=3, run_time="12s")
    assert rc == 0, output
    assert summary["failures"] == 0, summary["error_samples"]
    assert summary["workers_lost"] == [] and len(summary["workers"]) == 3
    tallies = [_own_tally(folder) for folder in folders]
    # Every worker's sessions left from its own address, as from its own machine.
    assert sorted(a for t in tallies for a in t["local_addresses"]) == list(WORKER_ADDRESSES)
    # Per metric, the merged summary holds exactly the sum of what each worker counted.
    metrics = summary["metrics"]
    names = {name for t in tallies for name in t["tally"]}
    assert {"connect", "first_audio", "voice_to_voice", "ping_rtt", "send_lateness"} <= names
    for name in names:
        own = sum(t["tally"].get(name, 0) for t in tallies)
        merged = (
            metrics[name]["n"] + metrics[name]["failures"]
            if "n" in metrics[name]
            else metrics[name]["requests"]
        )
        assert merged == own, (name, merged, own)
    assert summary["requests"] == sum(t["rows"] for t in tallies)
    assert sum(t["dropped_after_last_batch"] for t in tallies) == 0
    # Each worker held its users' sessions and was answered.
    by_name = {w["name"]: w for w in summary["workers"]}
    for t in tallies:
        w = by_name[t["name"]]
        assert w["complete"] and w["rows_match"] and w["rows"] == t["rows"]
        assert w["sessions"] >= 2 and w["turns"] >= 2, w
        assert w["cpu_percent"]["p50"] is not None
    assert metrics["first_audio"]["users_with_samples"] == 6
    assert 400 < metrics["first_audio"]["p50"] < 1500
    run_dir = tmp_path / "master" / "run"
    assert sorted(p.name for p in run_dir.glob("raw-*.jsonl")) == [
        "raw-1.jsonl",
        "raw-2.jsonl",
        "raw-3.jsonl",
    ]
    assert (run_dir / "loadtest.png").is_file()
    # No worker wrote into the master's folder, nor the master into theirs.
    for folder in folders:
        assert not list(folder.glob("raw-*.jsonl"))


def test_a_worker_killed_mid_run_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    rc, summary, folders, output = _run(tmp_path, workers=2, run_time="14s", kill_after_s=3.0)
    assert rc == 3, output
    assert summary["workers_lost"] == ["gen2-1"], summary["workers"]
    lost = next(w for w in summary["workers"] if w["name"] == "gen2-1")
    assert not lost["complete"] and lost["rows_match"] is None
    assert lost["lost_after_s"] is not None and lost["rows"] > 0
    survivor = next(w for w in summary["workers"] if w["name"] == "gen1-1")
    assert survivor["complete"] and survivor["rows_match"]
    assert survivor["rows"] == _own_tally(folders[0])["rows"]
    assert not list(folders[1].glob("worker-*.json"))  # killed before it could write
    violations = summary["thresholds"]["violations"]
    assert "worker gen2-1 was lost mid-run; its last measurements are missing" in violations
