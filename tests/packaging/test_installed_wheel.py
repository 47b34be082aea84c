"""sagelab as a user gets it: a wheel, installed with ``[local,metrics,loadtest]`` into a fresh
virtual environment (no system site-packages, nothing from this checkout), run from an empty
folder.

The wheel is built from the repository and installed once per run (pip's cache makes that a
matter of a minute). Every command then runs in its own empty temporary folder, so a file read
from the checkout instead of the package, or a dependency declared by no extra, fails here. The
installed package is listed before and after: no command may write inside it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Installed:
    venv: Path
    package_dir: Path

    @property
    def sagelab(self) -> str:
        return str(self.venv / "bin" / "sagelab")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def files(self) -> dict[str, float]:
        """Every file of the installed package (bytecode caches aside) and its mtime."""
        return {
            str(p.relative_to(self.package_dir)): p.stat().st_mtime
            for p in self.package_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }


def _env() -> dict[str, str]:
    """The caller's environment minus anything pointing into this checkout or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.pop("SAGELAB_DATA", None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    return env


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
        f"\n--- stderr\n{done.stderr[-4000:]}"
    )
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    dist, venv = root / "dist", root / "venv"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
         cwd=root, timeout=600)  # fmt: skip
    (wheel,) = dist.glob("sagelab-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=120)  # a clean one
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, f"{wheel}[local,metrics,loadtest]"], cwd=root, timeout=INSTALL_TIMEOUT_S)
    code = "import os, sagelab; print(os.path.dirname(sagelab.__file__))"
    where = _run([str(venv / "bin" / "python"), "-c", code], cwd=root, timeout=60).stdout.strip()
    package_dir = Path(where)
    assert package_dir.is_relative_to(venv), f"sagelab imported from {package_dir}, not the venv"
    yield Installed(venv, package_dir)


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def untouched(installed: Installed) -> Iterator[None]:
    """The command under test must not write inside the installed package."""
    before = installed.files()
    yield
    assert installed.files() == before, "a command changed files inside the installed package"


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 600)
def test_demo_runs_from_an_empty_folder(installed: Installed, empty_dir: Path, untouched: None):
    done = _run([installed.sagelab, "demo"], cwd=empty_dir, timeout=600)
    (run_dir,) = (empty_dir / "runs").glob("demo-*")
    assert (run_dir / "timeline.png").is_file() and (run_dir / "records.sqlite3").is_file()
    assert "Search for customers in Oslo" in done.stdout  # the bundled conversation was spoken


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_serve_starts_from_an_empty_folder(
    installed: Installed, empty_dir: Path, untouched: None
) -> None:
    """The server answers /healthz with both bundled agents, and what it writes (its store, the
    demo database the offline agent's tools use) lands in the working folder."""
    env = _env() | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [installed.sagelab, "serve", "--port", "0"], cwd=empty_dir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url, seen, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "sagelab serving" in line:
                url = re.search(r"http://[\d.]+:\d+", line)
        assert url is not None, "no 'sagelab serving' line:\n" + "".join(seen)
        with urllib.request.urlopen(url.group(0) + "/healthz", timeout=10) as response:
            health = json.load(response)
        assert health["status"] == "ok"
        assert {"scripted", "audio-sage"} <= set(health["agents"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert (empty_dir / "runs").is_dir() and any((empty_dir / "runs").glob("*.sqlite3"))


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_loadtest_runs_from_an_empty_folder(
    installed: Installed, empty_dir: Path, untouched: None
) -> None:
    packaged = _run(
        [installed.python, "-c",
         "from importlib import resources; "
         "print(resources.files('sagelab.loadtest').joinpath('locustfile.py').is_file())"],
        cwd=empty_dir, timeout=60,
    ).stdout.strip()  # fmt: skip
    if packaged != "True":
        pytest.skip(
            "sagelab.loadtest ships no locustfile.py yet (it moves into the package in the "
            "load-test work); this step checks as soon as it does"
        )
    out = empty_dir / "lt"
    # What this checks is that the command works from the wheel, not the latency of a shared
    # CI machine: the budget cannot fail the run, so exit 0 means locust ran and reported.
    loose = [
        "--max-error-rate",
        "1",
        "--max-stutter-share",
        "1",
        "--max-p95-first-audio-ms",
        "1e9",
        "--max-p95-voice-to-voice-ms",
        "1e9",
    ]
    _run([installed.sagelab, "loadtest", "--users", "2", "--run-time", "10s", "--out", str(out),
          *loose], cwd=empty_dir, timeout=300)  # fmt: skip
    assert (out / "summary.json").is_file() and (out / "loadtest.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary, "the load test wrote an empty summary"


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_bench_run_on_a_bundled_scenario(
    installed: Installed, empty_dir: Path, untouched: None
) -> None:
    done = _run([installed.sagelab, "bench", "run", "client-tool-failure", "--json"],
                cwd=empty_dir, timeout=300)  # fmt: skip
    assert '"passed": true' in done.stdout.splitlines()[-1]
    (report_dir,) = (empty_dir / "runs").glob("*-scenarios")
    assert any(report_dir.glob("*.md"))
