"""A pytest plugin: assert on a voice agent's behaviour in your own tests.

Load it with ``pytest -p sagelab.testing``, or ``pytest_plugins = ["sagelab.testing"]`` in a
``conftest.py``. It adds two fixtures::

    def test_the_demo(run_scenario):
        result = run_scenario("data/scenarios/demo_conversation.yaml")
        assert result.passed, result.explain()

    def test_refuses_bad_status(run_scenario):
        result = run_scenario({
            "agent": "audio-sage",
            "steps": [{"say": "Update record five, set the status to sleeping.",
                       "expect": {"tool": {"name": "update_record", "error": True},
                                  "reply_contains": "Sorry"}}],
        })
        assert result.passed, result.explain()
        step = result.results[0].steps[0].observation   # heard, reply, tools, latencies_ms

``run_scenario(scenario, repeat=1)`` takes a scenario file, an inline mapping (recordings
relative to the test file) or a ``Scenario``, holds the conversation(s) and returns the judged
``SuiteResult``. It is synchronous and runs its own event loop on a worker thread, so it works
from plain and from ``async`` tests alike.

``voice_agents`` (session-scoped) is where conversations go: by default the bundled server,
started in its own process on first use with only the agent a scenario asks for (one process
per agent, kept for the session, since loading Whisper and Piper takes seconds), each with a
fresh demo database and conversation store. Options:

``--sagelab-url URL``      talk to a running server instead (sagelab or ElevenLabs-compatible)
``--sagelab-store PATH``   with ``--sagelab-url``: that server's conversation store, to check
                           server tool parameters
``--sagelab-config FILE``  the agents file for the bundled server (default: sagelab's own)
``--sagelab-report DIR``   write a report with figures per test to ``DIR/<test name>/``
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sagelab.scenarios.loader import load_scenario, parse_scenario
from sagelab.scenarios.model import Scenario
from sagelab.scenarios.report import write_report
from sagelab.scenarios.serverconf import STORE_NAME, write_run_config
from sagelab.scenarios.suite import SuiteResult, run_suite

ScenarioInput = str | Path | dict[str, Any] | Scenario


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sagelab", "sagelab voice-agent scenarios")
    group.addoption("--sagelab-url", default=None, help="server to talk to (default: bundled)")
    group.addoption("--sagelab-store", default=None, help="with --sagelab-url: its store")
    group.addoption("--sagelab-config", default=None, help="agents file for the bundled server")
    group.addoption("--sagelab-report", default=None, help="write a report per test here")


class VoiceAgents:
    """Where each agent is reached: a given URL, or bundled servers started on demand."""

    def __init__(
        self,
        workdir: Path,
        *,
        url: str | None = None,
        store: Path | None = None,
        config: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.url = url
        self.store = store
        self.config = config
        self._servers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def endpoint(self, agent: str) -> tuple[str, Path | None]:
        """The base URL for ``agent`` and the store to read tool parameters from."""
        if self.url is not None:
            return self.url, self.store
        with self._lock:
            server = self._servers.get(agent)
            if server is None:
                from sagelab.bench.serverproc import ServerProcess

                run_dir = self.workdir / agent
                config = write_run_config(self.config, [agent], run_dir)
                server = ServerProcess(config, agents=[agent], log_path=run_dir / "server.log")
                server.__enter__()
                self._servers[agent] = server
        return server.http_url, self.workdir / agent / STORE_NAME

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.__exit__(None, None, None)
            self._servers.clear()


@pytest.fixture(scope="session")
def voice_agents(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoiceAgents]:
    """The servers ``run_scenario`` talks to (see the module docstring for the options)."""
    option = request.config.getoption
    store = option("--sagelab-store")
    config = option("--sagelab-config")
    agents = VoiceAgents(
        tmp_path_factory.mktemp("sagelab-servers"),
        url=option("--sagelab-url"),
        store=Path(store) if store else None,
        config=Path(config) if config else None,
    )
    try:
        yield agents
    finally:
        agents.close()


@pytest.fixture
def run_scenario(
    request: pytest.FixtureRequest, voice_agents: VoiceAgents
) -> Callable[..., SuiteResult]:
    """``run_scenario(scenario, repeat=1) -> SuiteResult``: hold the conversation, judge it."""
    report_root = request.config.getoption("--sagelab-report")
    test_dir = request.path.parent

    def run(scenario: ScenarioInput, *, repeat: int = 1) -> SuiteResult:
        parsed = _scenario(scenario, test_dir, request.node.name)
        url, store = voice_agents.endpoint(parsed.agent)
        suite = _in_thread(lambda: run_suite([parsed], url, repeat=repeat, store_path=store))
        if report_root:
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            write_report(suite, Path(report_root) / name)
        return suite

    return run


def _scenario(scenario: ScenarioInput, base: Path, test_name: str) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, dict):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-") or "scenario"
        return parse_scenario(scenario, where=f"{test_name} (inline)", base_dir=base,
                              default_name=name)  # fmt: skip
    path = Path(scenario)
    return load_scenario(path if path.is_absolute() or path.exists() else base / path)


def _in_thread(make: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on a fresh loop in a worker thread: a test may itself be
    running inside an event loop (pytest-asyncio), where ``asyncio.run`` is not allowed."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="sagelab-scenario")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
