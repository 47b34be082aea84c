"""Shared fixtures: a real bundled server on a free port, with its SQLite store in tmp.

Also the suite's tiers. Every test gets one tier marker, so ``-m fast`` is the quick tier of
``make check`` and ``make test`` runs them all in parallel (``pytest-xdist``):

- ``fast``: no model, no browser, nothing that waits on the wall clock for long (in-process
  servers on port 0 are fine for short exchanges);
- ``slow``: no model, but real-time streaming, sleeps, subprocesses or benches that take seconds;
- ``model``: real Whisper, Piper, Silero VAD or an LLM;
- ``browser``: Debian's Chromium driven by Playwright;
- ``load``: locust runs;
- ``install``: the installed-wheel test (marked in its own file).

A marker written on the test itself wins. Otherwise the tables below decide, then the
fixtures the test uses, and a test in none of them is ``fast``: a new test that takes seconds
belongs in ``SLOW_TESTS`` (or gets ``@pytest.mark.slow``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from elevenlabs.conversational_ai.conversation import AudioInterface
from hypothesis import HealthCheck, settings

from sagelab.audio import pcm_bytes, silence
from sagelab.config import ServerConfig, load_config
from sagelab.server.app import BackgroundServer, SagelabServer

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "data" / "speech"

TIERS = ("fast", "slow", "model", "browser", "load", "install")

# Modules all of whose tests are one tier (``-m fast`` does not even import them).
MODULE_TIERS = {
    "test_demo.py": "model",  # the demo talks to audio-sage
    "local/test_stt.py": "model",
    "local/test_tts.py": "model",
    "local/test_vad.py": "model",
    "local/test_audio_sage.py": "model",
    "scenarios/test_audio_sage_scenario.py": "model",
    "notebook/test_notebooks.py": "model",  # audio_sage_url
    "notebook/test_browser.py": "browser",
    "notebook/test_audio_js.py": "browser",
    "loadtest/test_locust.py": "load",
    "bench/test_network_bench.py": "slow",
    "bench/test_transport_bench.py": "slow",
    "client/test_sdk_helper.py": "slow",
    "metrics/test_benches.py": "slow",
    "metrics/test_fidelity_latency.py": "slow",
    "metrics/test_fidelity_stutter.py": "slow",
    "notebook/test_panel_session.py": "slow",
    "scenarios/test_pytest_plugin.py": "slow",
    "scenarios/test_scenario_tools.py": "slow",
    "server/test_elevenlabs_relay.py": "slow",
    "server/test_shutdown.py": "slow",
    "reliability/test_fuzz_live.py": "slow",
}

# Single tests (path::name, parameters left off) of modules that are otherwise fast.
MODEL_TESTS = """
notebook/test_analysis_notebooks.py::test_latency_accuracy
notebook/test_analysis_notebooks.py::test_prompt_tool_lab
reliability/test_faults.py::test_stt_and_tts_exceptions_are_reported_and_the_session_goes_on
"""
LOAD_TESTS = """
notebook/test_analysis_notebooks.py::test_load_test
loadtest/test_runner.py::test_the_packaged_locustfile_offers_both_protocols
"""
SLOW_TESTS = """
client/test_netem.py::test_added_latency_shows_in_voice_to_voice
client/test_netem.py::test_sync_session_takes_the_same_conditions
client/test_netem.py::test_close_waits_for_frames_still_on_the_simulated_wire
client/test_netem.py::test_heavy_jitter_and_loss_keep_every_frame_in_order
client/test_netem.py::test_added_latency_shows_in_both_round_trips
client/test_session.py::test_spoken_turn_is_paced_in_real_time_and_answered_after_the_silence_window
client/test_sync_session.py::test_spoken_turn_through_blocking_calls
loadtest/test_runner.py::test_cli_refuses_an_unknown_backend
loadtest/test_wire.py::test_signed_url_opens_a_session_and_nothing_else_does
metrics/test_plots.py::test_figures_of_a_real_session_save_as_png
reliability/test_faults.py::test_sigkill_mid_session_keeps_the_store_and_a_restart_serves
reliability/test_faults.py::test_tcp_reset_mid_utterance
reliability/test_faults.py::test_half_open_connection_is_found_by_keepalive
reliability/test_limits.py::test_audio_in_real_time_passes_and_a_flood_is_refused
reliability/test_redaction.py::test_debug_log_of_a_real_server_holds_no_credentials
reliability/test_resume.py::test_session_resumes_the_same_conversation_after_a_tcp_reset
reliability/test_resume.py::test_speech_during_the_outage_is_dropped_like_a_live_microphones
reliability/test_resume.py::test_relay_session_resumes_and_the_next_spoken_turn_works
reliability/test_resume.py::test_a_conversation_nobody_resumes_ends_and_frees_its_slot
reliability/test_soak.py::test_mini_soak_holds_sessions_and_loses_nothing
scenarios/test_bench_run.py::test_a_passing_suite_exits_0_and_writes_a_report_with_figures
scenarios/test_bench_run.py::test_a_failed_expectation_exits_1_and_names_it
server/test_official_sdk.py::test_sync_sdk_interruption_drops_stale_audio
server/test_official_sdk.py::test_sync_sdk_conversation_with_tools_callbacks_and_latency
server/test_relay.py::test_spoken_turn_over_webm_opus
server/test_relay.py::test_relay_events_reach_the_listener_and_events_iterators
server/test_rest_api.py::test_create_list_patch_agent_and_new_sessions_see_it
server/test_store.py::test_sigkill_loses_nothing_that_was_flushed
"""
TEST_TIERS = {
    test: tier
    for tier, block in (("model", MODEL_TESTS), ("load", LOAD_TESTS), ("slow", SLOW_TESTS))
    for test in block.split()
}

# Modules that take longest, longest first (summed test time of a `make test` run, under load;
# see docs/testing.md). `make test` runs them first: with `--dist loadfile` a module is one unit
# of work, and xdist by default hands out the modules with the most tests first, which leaves
# the long single-test modules (the installed wheel, streaming WER, the demo) to start last and
# set the wall time. Longest-first keeps every worker busy to the end. Only the order changes.
LONGEST_FIRST = """
packaging/test_installed_wheel.py
bench/test_streaming_wer.py
notebook/test_analysis_notebooks.py
notebook/test_browser.py
notebook/test_browser_lab.py
notebook/test_panel_session.py
loadtest/test_locust.py
test_demo.py
loadtest/test_distributed.py
local/test_audio_sage.py
server/test_official_sdk.py
local/test_openai_llama_server.py
local/test_audio_sage_llm.py
local/test_stt.py
metrics/test_benches.py
scenarios/test_bench_run.py
scenarios/test_pytest_plugin.py
conversation/test_agent_simulated.py
client/test_netem.py
metrics/test_fidelity_latency.py
server/test_shutdown.py
reliability/test_faults.py
server/test_relay.py
notebook/test_notebooks.py
local/test_llm_brain.py
scenarios/test_audio_sage_scenario.py
notebook/test_audio_js.py
server/test_elevenlabs_relay.py
bench/test_network_bench.py
reliability/test_soak.py
reliability/test_resume.py
scenarios/test_scenario_tools.py
"""
_RANK = {module: rank for rank, module in enumerate(LONGEST_FIRST.split())}

# Fixtures that put a test in a tier wherever it is (browser first: it also needs the models).
FIXTURE_TIERS = {"chromium": "browser", "jupyter_lab": "browser", "audio_sage_url": "model"}


def _relative(path: Path) -> str:
    return path.resolve().relative_to(REPO / "tests").as_posix()


def tier_of(item: pytest.Item) -> str:
    own = [m.name for m in item.iter_markers() if m.name in TIERS]
    if own:
        return own[0]
    name = item.originalname if isinstance(item, pytest.Function) else item.name
    key = f"{_relative(item.path)}::{name}"
    if key in TEST_TIERS:
        return TEST_TIERS[key]
    fixtures = set(getattr(item, "fixturenames", ()))
    for fixture, tier in FIXTURE_TIERS.items():
        if fixture in fixtures:
            return tier
    return MODULE_TIERS.get(_relative(item.path), "fast")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m fast`` skips importing the modules that hold no fast test (a few seconds less)."""
    if (config.option.markexpr or "").strip() != "fast" or collection_path.suffix != ".py":
        return None
    try:
        tier = MODULE_TIERS.get(_relative(collection_path))
    except ValueError:
        return None
    return True if tier not in (None, "fast") else None


# Hypothesis' per-example deadline (200 ms) and its "input generation is slow" health check
# are timings: on a shared 2-core machine running the suite on several workers they fail
# tests whose properties hold. The number of examples each test asks for is unchanged.
settings.register_profile("sagelab", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sagelab")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable: each module keeps its own order (test_fuzz_live's last test relies on it).
    items.sort(key=lambda item: _RANK.get(_relative(item.path), len(_RANK)))
    for item in items:
        tier = tier_of(item)
        if not any(m.name == tier for m in item.iter_markers()):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def speech_dir() -> Path:
    return SPEECH


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    """The bundled ``scripted`` agent, on port 0, storing into this test's tmp dir."""
    config = load_config(
        None,
        env={},
        port=0,
        store_path=str(tmp_path / "store.sqlite3"),
        ping_interval_s=0.2,
    )
    config.agents = [a for a in config.agents if a.id == "scripted"]
    return config


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[SagelabServer]:
    async with SagelabServer(server_config) as srv:
        yield srv


@pytest.fixture
def bg_server(server_config: ServerConfig) -> Iterator[SagelabServer]:
    """A server on its own thread, for the synchronous official SDK."""
    with BackgroundServer(server_config) as srv:
        yield srv


class WavMicrophone(AudioInterface):
    """A microphone that plays a script: each utterance starts at a given second, silence
    elsewhere, sent in 250 ms chunks in real time. Records every output chunk and interrupt."""

    def __init__(self, placements: list[tuple[float, np.ndarray]], total_s: float):
        self.audio = silence(int(total_s * 1000))
        for at, pcm in placements:
            i = int(at * 16000)
            self.audio[i : i + pcm.size] = pcm
        self.outputs: list[tuple[float, bytes]] = []
        self.interrupts: list[float] = []
        self._stop = threading.Event()

    def start(self, input_callback):  # type: ignore[no-untyped-def]
        def run() -> None:
            t0 = time.monotonic()
            chunk = 4000  # 250 ms, the SDK's recommended input chunk
            for k, start in enumerate(range(0, self.audio.size, chunk)):
                delay = t0 + k * 0.25 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                input_callback(pcm_bytes(self.audio[start : start + chunk]))

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def output(self, audio: bytes) -> None:
        self.outputs.append((time.monotonic(), audio))

    def interrupt(self) -> None:
        self.interrupts.append(time.monotonic())


@pytest.fixture(name="WavMicrophone")
def wav_microphone_class() -> type[WavMicrophone]:
    """The official SDK's ``AudioInterface`` fed from recordings on a timed script."""
    return WavMicrophone
