"""The runner's decisions that need no locust run: option checks, workloads, command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sagelab.loadtest.locustproc import LocustRun
from sagelab.loadtest.runner import LoadtestOptions, Workload, default_budget

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"protocol": "relay", "signed_url": True}, "relay route has no signed URLs"),
        ({"processes": 0}, "--processes must be at least 1"),
        ({"target": "http://h", "config": Path("a.yaml")}, "drop --target"),
        ({"protocol": "sip"}, "use convai or relay"),
        ({"users": 0}, "--users must be at least 1"),
    ],
)
def test_contradictory_options_are_refused_before_anything_starts(
    changes: dict[str, object], message: str
) -> None:
    opts = LoadtestOptions(users=5, spawn_rate=1, run_time="5s")
    for key, value in changes.items():
        setattr(opts, key, value)
    with pytest.raises(ValueError, match=message):
        opts.check()


def test_backends_get_their_own_workload_and_budget() -> None:
    local, scripted = Workload.for_backend("local"), Workload.for_backend("scripted")
    for workload in (local, scripted):
        assert (REPO / "data" / workload.speech).is_file()
    assert local.lead_ms > 0  # lets audio-sage's greeting finish
    assert default_budget("local").max_p95_voice_to_voice_ms == 1500
    assert default_budget("local").max_p95_first_audio_ms is None
    assert default_budget("scripted").max_p95_first_audio_ms == 1000


def test_distributed_commands_are_a_master_and_workers_on_loopback(tmp_path: Path) -> None:
    run = LocustRun(
        locustfiles=[Path("loadtests/locustfile.py"), Path("loadtests/step_shape.py")],
        user_class="RelayUser",
        host="http://127.0.0.1:1",
        run_dir=tmp_path,
        env={},
        users=4,
        spawn_rate=2,
        run_time="10s",
        workers=2,
    )
    (master_name, master, n0), *workers = run.commands(master_port=5599)
    assert master_name == "locust-master" and n0 == 0
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "2"
    assert master[master.index("--master-bind-port") + 1] == "5599"
    assert master[master.index("-f") + 1] == "loadtests/locustfile.py,loadtests/step_shape.py"
    assert [n for _, _, n in workers] == [1, 2]
    for _, argv, _ in workers:
        assert "--worker" in argv and argv[argv.index("--master-port") + 1] == "5599"
        assert argv[-1] == "RelayUser" and "-u" not in argv  # the master hands out users
    assert run.raw_logs() == [tmp_path / "raw-1.jsonl", tmp_path / "raw-2.jsonl"]
    single = LocustRun([Path("f.py")], "ConvAIUser", "h", tmp_path, {}, run_time=None)
    ((_, argv, _),) = single.commands()
    assert "--master" not in argv and "-t" not in argv  # a shape decides users and time


def test_the_locustfile_offers_both_protocols() -> None:
    """``locust --list`` loads the file the way a run does (in a subprocess: gevent)."""
    out = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locustfile.py"), "-l"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["ConvAIUser", "RelayUser"]


def test_cli_refuses_an_unknown_backend() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sagelab", "loadtest", "--backend", "gpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "use one of scripted, local" in out.stdout
