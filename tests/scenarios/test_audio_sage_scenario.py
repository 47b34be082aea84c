"""A scenario against the offline voice agent: Piper speaks the user's line, Whisper hears it,
the rules brain calls a server tool that fails, and its parameters come from the server's store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sagelab.bench.serverproc import ServerProcess
from sagelab.scenarios import parse_scenario, run_suite
from sagelab.scenarios.serverconf import STORE_NAME, write_run_config


def test_spoken_line_failing_server_tool_and_stored_parameters(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "agent": "audio-sage",
            "settings": {"greeting": "talk_over"},
            "steps": [
                {
                    "say": "Tell me about record forty two.",
                    "expect": {
                        "max_wer": 0.2,
                        "tool": {
                            "name": "get_record",
                            "parameters": {"record_id": 42},
                            "error": True,
                        },
                        "reply_contains": "could not read that account",
                        "replies": 1,
                    },
                },
            ],
        },
        where="inline",
    )
    config = write_run_config(None, ["audio-sage"], tmp_path)
    with ServerProcess(config, agents=["audio-sage"], log_path=tmp_path / "server.log") as srv:
        suite = asyncio.run(run_suite([scenario], srv.http_url, store_path=tmp_path / STORE_NAME))
    assert suite.passed, suite.explain()
    [step] = suite.results[0].steps
    obs = step.observation
    assert obs is not None
    assert obs.tools[0].parameters == {"record_id": "42"}  # as the brain sent it, from the store
    assert obs.wer is not None and obs.wer <= 0.2
    # The server's own stage timings reached the turn (the stage budgets' source).
    assert {"endpointing", "stt", "brain", "tool", "tts_first_audio", "voice_to_voice"} <= set(
        obs.latencies_ms
    )
    # The run's demo database was made for it, not shared with other runs.
    assert (tmp_path / "audio-sage.sqlite3").is_file()


def test_the_monologue_pauses_are_shorter_than_the_end_of_turn_silence() -> None:
    """What long-monologue claims of its audio, as the agent's VAD hears it: no pause between
    its sentences reaches audio-sage's 400 ms. Trimmed at -40 dBFS, the recordings kept enough
    room tone and breath that two of the 250 ms joins were heard as 540 and 860 ms pauses, and
    a quick agent answered in the middle of the reading."""
    from sagelab.agents.local.vad import VadTurnDetector
    from sagelab.scenarios.loader import load_scenario
    from sagelab.scenarios.runner import _Audio

    path = Path(__file__).resolve().parents[2] / "src/sagelab/assets/scenarios/long_monologue.yaml"
    pcm = _Audio(load_scenario(path), None).pcm[0]
    detector = VadTurnDetector(end_silence_ms=800)
    pauses, quiet_since = [], None
    for i in range(0, pcm.size, 1600):
        detector.feed(pcm[i : i + 1600])
        now = detector.silence_start
        if quiet_since is not None and now != quiet_since:
            pauses.append((i + 1600 - quiet_since) / 16)
        quiet_since = now
    assert len(pauses) >= 4 and max(pauses) < 400, pauses
