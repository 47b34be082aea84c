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
