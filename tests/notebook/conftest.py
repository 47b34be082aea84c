"""Fixtures for the notebook widgets: the bundled server with ``audio-sage`` in its own process,
JupyterLab started headless, and Debian's Chromium driven by Playwright (never a downloaded
browser)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from nb_helpers import REPO, Lab, scratch_notebooks

from sagelab.bench.serverproc import ServerProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "runs" / "test-artifacts"


@pytest.fixture(scope="session")
def audio_sage_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sagelab serve`` with the bundled agents (Whisper and Piper load once per process)."""
    tmp = tmp_path_factory.mktemp("audio-sage")
    log = tmp / "server.log"
    with ServerProcess(None, store_path=str(tmp / "store.sqlite3"), log_path=log) as server:
        yield server.http_url


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing at /usr/bin/chromium: `make test` installs it "
            "(apt-get install -y chromium); Playwright never downloads its own browsers here"
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests leave screenshots (git-ignored ``runs/``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def lab_settings(settings: Path) -> None:
    """No news pop-up (it would cover the panel in screenshots) and no autosave."""
    apputils = settings / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    docmanager = settings / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}')


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory, audio_sage_url: str) -> Iterator[Lab]:
    root = scratch_notebooks(tmp_path_factory.mktemp("lab"))
    token = "sagelab-test-token"
    port = free_port()
    runtime = root / ".runtime"
    settings = root / ".settings"
    lab_settings(settings)
    env = {
        **os.environ,
        "SAGELAB_URL": audio_sage_url,
        "JUPYTER_CONFIG_DIR": str(root / ".config"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
    }
    env.pop("ELEVENLABS_API_KEY", None)  # the tests talk to the bundled server only
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells by command
        "--LabApp.extension_manager=readonly",  # no PyPI queries
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = root / "lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(root, f"http://127.0.0.1:{port}", token, runtime, process, log, env)
    try:
        deadline = time.monotonic() + 180  # a start-up bound, generous for a loaded machine
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start in 180 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
