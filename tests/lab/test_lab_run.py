"""A lab run end to end on a real server: variants as agents, interleaved runs, rows, figure.

The scripted agent needs no model, so this checks the lab's plumbing quickly; the variants
differ in what the scripted agent does act on (its tools), so the measured difference is real:
the variant without tools cannot make the call its script asks for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from sagelab.audio import save_wav
from sagelab.config import load_config
from sagelab.lab import lab_agents_file, parse_lab, plot_lab, run_lab_on
from sagelab.scenarios.serverconf import STORE_NAME
from sagelab.server.app import SagelabServer

LAB = {
    "name": "tools-or-not",
    "scenario": {
        "name": "two-turns",
        "agent": "scripted",
        "settings": {"greeting": "talk_over", "agent_quiet_ms": 300},
        "client_tools": {"get_weather": {"result": "sunny"}},
        "steps": [{"send_text": "hello"}, {"send_text": "weather in Paris?"}],
    },
    "checks": {"banned_words": ["sunny"]},
    "variants": [
        {"name": "tools", "checks": {"reply_matches": "sunny"}},
        {"name": "notools", "tools": []},
    ],
}


def _short_recordings(agents_file: Path) -> None:
    """Every recording of the scripted agents becomes 0.6 s of tone: the runs wait for each
    reply to play out in real time, and what this test checks is the lab, not the audio."""
    tone = (8000 * np.sin(2 * np.pi * 220 * np.arange(9600) / 16_000)).astype(np.int16)
    save_wav(agents_file.parent / "short.wav", tone)
    raw = yaml.safe_load(agents_file.read_text(encoding="utf-8"))
    for agent in raw["agents"]:
        options = agent["options"]
        options["greeting_audio"] = "short.wav"
        options["replies"] = [{**reply, "audio": "short.wav"} for reply in options["replies"]]
    agents_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


async def test_a_lab_runs_every_variant_in_turn_and_measures_each_reply(tmp_path: Path) -> None:
    spec = parse_lab(LAB)
    ids = lab_agents_file(spec, None, tmp_path)
    _short_recordings(tmp_path / "agents.yaml")
    config = load_config(tmp_path / "agents.yaml", env={}, port=0)
    order: list[str] = []
    async with SagelabServer(config) as server:
        result = await run_lab_on(
            spec,
            server.http_url,
            ids,
            repeat=2,
            store_path=tmp_path / STORE_NAME,
            on_run=lambda run: order.append(run.variant),
        )
    assert order == ["tools", "notools", "tools", "notools"]
    rows = result.replies
    assert len(rows) == 2 * 2 * 2  # variants x runs x turns
    assert rows["error"].isna().all(), rows["error"].tolist()
    assert (rows["time_to_first_audio_ms"] > 0).all()
    weather = rows[rows["step"] == 2].set_index(["variant", "run"])
    assert (weather.loc["tools", "tools"] == "get_weather").all()
    assert (weather.loc["notools", "tool_calls"] == 0).all()
    assert weather.loc["tools", "reply"].str.contains("sunny").all()
    summary = result.summary()
    assert summary.loc["tools", "tool_call_rate"] == 0.5
    assert summary.loc["notools", "tool_call_rate"] == 0.0
    assert summary.loc["tools", "tool_validity"] == 1.0
    # The shared banned word is said only where the tool ran; reply_matches is one variant's.
    assert summary.loc["tools", "banned_words_rate"] == 0.5
    assert summary.loc["notools", "banned_words_rate"] == 1.0
    assert "reply_matches_rate" in summary.columns
    assert rows.loc[rows["variant"] == "notools", "check_reply_matches"].isna().all()
    figure = tmp_path / "lab.png"
    plot_lab(rows, figure)
    assert figure.stat().st_size > 10_000
