"""The runner's decisions that need no locust run: option checks, workloads, command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sagelab.loadtest.locustproc import LocustRun, packaged_locustfiles
from sagelab.loadtest.runner import LoadtestOptions, Workload, default_budget
from sagelab.loadtest.settings import bundled_speech


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"protocol": "relay", "signed_url": True}, "relay route has no signed URLs"),
        ({"processes": 0}, "--processes must be at least 1 unless --expect-workers"),
        ({"processes": -1}, "cannot be negative"),
        ({"remote_workers": 2, "bind_host": "0.0.0.0"}, "pass --target"),
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
    for workload in (local, scripted):  # shipped in the package, so every worker has them
        assert bundled_speech(workload.speech)[:4] == b"RIFF"
    assert local.lead_ms > 0  # lets audio-sage's greeting finish
    assert default_budget("local").max_p95_voice_to_voice_ms == 1500
    assert default_budget("local").max_p95_first_audio_ms is None
    assert default_budget("scripted").max_p95_first_audio_ms == 1000


def test_a_run_is_a_master_and_local_workers_that_join_it(tmp_path: Path) -> None:
    run = LocustRun(
        locustfiles=[Path("pkg/locustfile.py"), Path("pkg/step_shape.py")],
        user_class="RelayUser",
        host="http://127.0.0.1:1",
        run_dir=tmp_path,
        env={"SAGELAB_AGENT": "scripted"},
        users=4,
        spawn_rate=2,
        run_time_s=10.0,
        local_workers=2,
        remote_workers=1,
        bind_host="0.0.0.0",
        port=5599,
    )
    (master_name, master, master_env), *workers = run.commands()
    assert master_name == "locust-master"
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "3"
    assert master[master.index("--master-bind-host") + 1] == "0.0.0.0"
    assert master[master.index("--master-bind-port") + 1] == "5599"
    assert master[master.index("-f") + 1] == "pkg/locustfile.py,pkg/step_shape.py"
    # The master ends the run itself, so that the workers' last measurements arrive first.
    assert "-t" not in master and master_env["SAGELAB_RUN_TIME_S"] == "10.0"
    assert master_env["SAGELAB_AGENT"] == "scripted"
    assert [name for name, _, _ in workers] == ["locust-worker-1", "locust-worker-2"]
    for _, argv, env in workers:
        assert "--worker" in argv and argv[argv.index("--master-port") + 1] == "5599"
        assert argv[argv.index("-f") + 1] == "pkg/locustfile.py"
        assert argv[argv.index("--master-host") + 1] == "127.0.0.1"  # a wildcard bind
        assert "-u" not in argv and "RelayUser" not in argv  # the master hands out users
        assert "SAGELAB_AGENT" not in env  # settings come from the master, not the env
    shaped = LocustRun([Path("f.py")], "ConvAIUser", "h", tmp_path, {}, run_time_s=None)
    master = shaped.commands()[0][1]
    assert "-u" not in master  # a shape decides users and time


def test_the_packaged_locustfile_offers_both_protocols() -> None:
    """``locust --list`` loads the file the way a run does (in a subprocess: gevent)."""
    with packaged_locustfiles(shape=True) as files:
        assert [f.name for f in files] == ["locustfile.py", "step_shape.py"]
        out = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(files[0]), "-l"],
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


def test_a_worker_refuses_a_master_address_it_cannot_use() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sagelab", "loadtest-worker", "--master", "master.lan:port"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--master port must be a number" in out.stdout
