"""A short soak: the real ``sagelab soak`` machinery (server process, sessions cycling, store
audit) for 15 seconds. The full bar (10 sessions x 10 minutes) runs from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagelab.bench.soak import SoakOptions, run_soak


def test_mini_soak_holds_sessions_and_loses_nothing(tmp_path: Path, speech_dir: Path):
    opts = SoakOptions(
        sessions=3,
        minutes=0.25,
        conversation_s=6,
        speech_path=speech_dir / "goforward.wav",
        out_dir=tmp_path / "soak",
        sample_s=0.5,
    )
    summary = run_soak(opts)
    assert summary["bar"]["passed"], summary["bar"]["broken"]
    assert summary["dropped_or_refused"] == 0 and summary["replies"] >= 3
    assert summary["conversations"] >= 6  # every worker ended one and opened the next
    assert summary["sessions_held_max"] == 3
    store = summary["store"]
    assert store["conversations"] == store["held_by_clients"] == summary["conversations"]
    assert store["lost"] == 0 and store["open"] == 0
    assert summary["registry_empty_after"] and summary["fds"]["growth_after"] <= 4
    on_disk = json.loads((tmp_path / "soak" / "summary.json").read_text())
    assert on_disk["conversations"] == summary["conversations"]
    assert (tmp_path / "soak" / "samples.csv").read_text().startswith("t_s,rss_mb,fds")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sessions": 0}, "--sessions"),
        ({"minutes": 0.1}, "--minutes"),
        ({"conversation_s": 900}, "max_duration_s"),
        ({"speech_path": Path("/nonexistent.wav")}, "--speech"),
    ],
)
def test_bad_soak_options_say_what_to_change(change: dict, message: str):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        SoakOptions(**change).check()
