"""The latency budget of ``sagelab bench pipeline``: shares that add up, nested stages apart."""

from __future__ import annotations

import pytest

from sagelab.bench.pipeline import budget_markdown, latency_budget
from sagelab.bench.stats import Summary

pytestmark = pytest.mark.fast


def _summary(values: list[float]) -> dict[str, float | int | None]:
    return Summary.of(values).as_dict(1)


def test_top_level_shares_and_other_add_up_to_the_whole() -> None:
    summary = {
        "voice_to_voice_ms": _summary([1000, 1200, 800, 1000]),
        "stages_ms": {
            "endpointing": _summary([500, 500, 400, 600]),
            "eot_model": _summary([100, 300]),  # two turns of four: the model decided
            "stt": _summary([100, 100, 100, 100]),
            "tts_first_audio": _summary([300, 400, 200, 300]),
            "tool": _summary([20]),
            "stt_compute": _summary([400, 400, 400, 400]),  # off the critical path
        },
    }
    rows = {r["stage"]: r for r in latency_budget(summary)}
    assert "stt_compute" not in rows
    top = [r for r in rows.values() if r["part_of"] is None and r["stage"] != "voice_to_voice"]
    assert sum(r["share"] for r in top) == pytest.approx(1.0, abs=0.002)
    assert rows["endpointing"]["share"] == pytest.approx(0.5)
    assert rows["other"]["share"] == pytest.approx(0.1)
    # A stage only some turns had counts for those turns: mean 200 ms × 2/4 of 1000 ms.
    assert rows["eot_model"]["share"] == pytest.approx(0.1)
    assert rows["eot_model"]["part_of"] == "endpointing"
    assert rows["voice_to_voice"]["p95_ms"] == summary["voice_to_voice_ms"]["p95"]
    table = budget_markdown(latency_budget(summary))
    assert "| endpointing | 500 |" in table and "↳ eot_model (in endpointing)" in table


def test_a_report_without_turns_gives_no_shares() -> None:
    rows = latency_budget({"voice_to_voice_ms": _summary([]), "stages_ms": {}})
    assert [r["stage"] for r in rows] == ["voice_to_voice"]
    assert rows[0]["share"] is None
