"""``bench pipeline`` and ``bench accuracy`` compute through ``sagelab.metrics``: run against the
real server with the scripted agent, whose delays and transcripts are known, so the reports can
be checked against the script rather than against themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sagelab.bench.accuracy import read_manifest, summarize, transcribe_manifest
from sagelab.bench.pipeline import load_conversation, merge, run_conversation, run_pipeline_bench
from sagelab.bench.pipeline import summarize as summarize_pipeline
from sagelab.config import ServerConfig
from sagelab.server.app import SagelabServer

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO / "data" / "speech"
SILENCE_MS = 300
REPLY_DELAY_MS = 60


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    [spec] = server_config.agents
    spec.first_message = "Hi."
    spec.options = {
        "greeting_audio": "audio/reply_lookup.wav",
        "turn_detection": {"threshold_dbfs": -40, "silence_ms": SILENCE_MS},
        "reply_delay_ms": REPLY_DELAY_MS,
        "replies": [
            {"text": "One.", "audio": "audio/reply_lookup.wav", "user_text": "go forward"},
            {"text": "A long one.", "audio": "audio/reply_long.wav", "user_text": "two words"},
            {"text": "Three.", "audio": "audio/reply_lookup.wav", "user_text": "barge in"},
        ],
    }
    return server_config


async def test_pipeline_bench_reports_the_metrics_of_its_turns(
    server: SagelabServer, tmp_path: Path
) -> None:
    script = {
        "agent": "scripted",
        "turns": [
            {"audio": str(SPEECH / "goforward.wav"), "text": "go forward"},
            {"audio": str(SPEECH / "goforward.wav"), "text": "x", "barge_in": {"after_ms": 600}},
            {"audio": str(SPEECH / "goforward.wav"), "text": "barge in"},
        ],
    }
    path = tmp_path / "conversation.yaml"
    path.write_text(yaml.safe_dump(script))
    agent_id, turns = load_conversation(path)
    result = await run_conversation(server.http_url, agent_id, turns)
    assert result.errors == []
    assert result.transcripts == ["go forward", "two words", "barge in"]

    report = summarize_pipeline(merge([result, result]))
    json.dumps(report)  # the CLI prints it as JSON
    v2v = report["voice_to_voice_ms"]
    assert v2v["n"] == 6  # three answered turns per run; the greeting answers nothing
    # No reply can come before the silence window and the injected delay, less the client's
    # own lateness in sending the chunk that ended speech (it is real-time paced).
    assert v2v["p50"] >= SILENCE_MS + REPLY_DELAY_MS - 50
    assert v2v["p50"] <= v2v["p95"] <= v2v["p99"] <= v2v["max"]
    assert report["interruption_ms"]["n"] == 2  # the long reply was cut in each run
    assert report["stages_ms"]["reply_delay"]["n"] == 6
    assert report["stages_ms"]["reply_delay"]["p50"] >= REPLY_DELAY_MS
    assert report["ttfa_ms"]["p50"] >= REPLY_DELAY_MS
    assert report["stutter"]["underruns"] >= 0 and report["errors"] == []


async def test_pipeline_bench_draws_its_figures_from_the_same_tables(
    server: SagelabServer, tmp_path: Path
) -> None:
    # The conversation names another agent; ``agent_id`` sends the same turns to scripted.
    script = {"agent": "nobody", "turns": [{"audio": str(SPEECH / "goforward.wav"), "text": "x"}]}
    path = tmp_path / "conversation.yaml"
    path.write_text(yaml.safe_dump(script))
    report = await run_pipeline_bench(
        server.http_url,
        path,
        runs=1,
        max_sessions=2,
        budget_p95_ms=10_000,
        plots_dir=tmp_path,
        agent_id="scripted",
    )
    assert report["agent_id"] == "scripted" and report["single"]["errors"] == []
    assert [step["sessions"] for step in report["capacity"]["steps"]] == [1, 2]
    assert report["capacity"]["max_sessions_within_budget"] == 2
    assert sorted(Path(p).name for p in report["plots"]) == [
        "latency_cdf.png",
        "stutter_vs_load.png",
    ]
    for figure in report["plots"]:
        assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_accuracy_bench_scores_what_the_agent_transcribed(
    server: SagelabServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.jsonl"
    audio = str(SPEECH / "goforward.wav")
    rows = [
        {"id": "a", "audio": audio, "text": "go forward"},
        {"id": "b", "audio": audio, "text": "two words here"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    done: list[str] = []
    results = await transcribe_manifest(
        server.http_url, "scripted", read_manifest(manifest), on_done=lambda i, _a: done.append(i)
    )
    assert done == ["a", "b"]
    summary = summarize(results)
    assert [r["hypothesis"] for r in summary["per_utterance"]] == ["go forward", "two words"]
    assert [r["wer"] for r in summary["per_utterance"]] == [0.0, pytest.approx(1 / 3, abs=1e-4)]
    assert summary["wer"] == pytest.approx(1 / 5, abs=1e-4)  # one deletion in five words
    assert summary["transcript_ms"]["n"] == 2
    assert summary["transcript_ms"]["p50"] >= SILENCE_MS - 50
