"""The analysis notebooks run headless (nbclient) with their work shrunk through their
``SAGELAB_NB_*`` parameters, and their key outputs are checked: the tables they save (read back
with pandas), the figures they draw (PNG outputs of the cells that draw them) and what they
print.

Each notebook writes its results under ``runs/`` of a scratch copy of the repository
(``scratch_notebooks``), so the files checked are the ones this run produced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pandas as pd
import pytest
from nb_helpers import REPO, scratch_notebooks

from sagelab.metrics.accuracy import score

if TYPE_CHECKING:  # nbformat and nbclient cost ~2 s of imports in every test worker
    import nbformat

pytestmark = pytest.mark.timeout(300)


def run_notebook(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[nbformat.NotebookNode, Path]:
    """Execute ``notebooks/<name>`` in a scratch copy with ``env`` (the kernel inherits it);
    returns the executed notebook and the scratch root."""
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    monkeypatch.delenv("SAGELAB_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = scratch_notebooks(tmp_path)
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(root / "notebooks" / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    )
    client.execute()
    errors = [
        f"{cell.id}: {out.ename}: {out.evalue}"
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]
    assert errors == []
    return nb, root


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("id") == cell_id)


def printed(nb: nbformat.NotebookNode, cell_id: str) -> str:
    return "".join(
        o.get("text", "") for o in cell(nb, cell_id).outputs if o.output_type == "stream"
    )


def assert_draws(nb: nbformat.NotebookNode, *cell_ids: str) -> None:
    for cell_id in cell_ids:
        images = [o for o in cell(nb, cell_id).outputs if "image/png" in o.get("data", {})]
        assert images, f"cell {cell_id!r} drew no figure"


def only_run_dir(root: Path, prefix: str) -> Path:
    [run_dir] = list((root / "runs").glob(f"{prefix}-*"))
    return run_dir


def test_every_notebook_is_run_by_a_test() -> None:
    from test_notebooks import ANALYSIS_NOTEBOOKS, NOTEBOOKS

    on_disk = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert on_disk == set(NOTEBOOKS) | ANALYSIS_NOTEBOOKS
    assert on_disk >= ANALYSIS_NOTEBOOKS  # none of them was renamed away


def test_latency_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audio_sage_url: str
) -> None:
    speech_ids = ["goforward", "cards_001", "alsa_Front_Left"]
    nb, root = run_notebook(
        "02_latency_accuracy.ipynb",
        tmp_path,
        monkeypatch,
        {
            "SAGELAB_URL": audio_sage_url,
            "SAGELAB_NB_RUNS": "1",
            "SAGELAB_NB_STEPS": "2",  # search, then read a record
            "SAGELAB_NB_NETWORKS": "ideal,3g",
            "SAGELAB_NB_NETWORK_SESSIONS": "1",
            "SAGELAB_NB_NETWORK_TURNS": "1",
            "SAGELAB_NB_ACCURACY": ",".join(speech_ids),
        },
    )
    run_dir = only_run_dir(root, "latency")
    assert_draws(nb, "latency-cdf", "timeline", "network-plot", "jitter-buffer", "wer-plot")
    assert "run 1/1: 2/2 replies" in printed(nb, "run-conversations")

    turns = pd.read_csv(run_dir / "turns.csv")
    answers = turns[turns["user_input"] == "speech"]
    assert list(answers["step"]) == [
        "1. Search for customers in Oslo.",
        "2. Tell me about record five.",
    ]
    stages = ["stage_endpointing_ms", "stage_stt_ms", "stage_brain_ms", "stage_tts_first_audio_ms"]
    for column in ["voice_to_voice_ms", "ttfa_ms", "transcript_ms", *stages]:
        assert answers[column].notna().all() and (answers[column] >= 0).all(), column
    assert (answers["voice_to_voice_ms"] > answers["ttfa_ms"]).all()  # it adds endpointing + STT
    assert "search_records" in answers["tools"].iloc[0]

    summary = pd.read_csv(run_dir / "latency_percentiles.csv", index_col=0)
    v2v = summary.loc["voice_to_voice_ms"]
    assert v2v["count"] == 2
    assert v2v["p50"] <= v2v["p95"] <= v2v["p99"] <= v2v["max"]
    assert v2v["max"] == pytest.approx(answers["voice_to_voice_ms"].max())

    networks = pd.read_csv(run_dir / "stutter_by_network.csv", index_col=0)
    assert list(networks.index) == ["ideal", "3g"]
    assert (networks["replies"] >= 1).all()
    assert networks["stutter_ratio"].between(0, 1).all()
    # 100 ms each way on 3g: its replies start later than over no network at all.
    assert networks.loc["3g", "v2v_p50_ms"] > networks.loc["ideal", "v2v_p50_ms"]
    sweep = pd.read_csv(run_dir / "jitter_buffer_sweep.csv")
    assert sweep["jitter_buffer_ms"].nunique() >= 5

    accuracy = pd.read_csv(run_dir / "accuracy.csv", keep_default_na=False)
    assert sorted(accuracy["id"]) == sorted(speech_ids)
    for row in accuracy.itertuples():
        assert row.hypothesis, f"nothing heard of {row.id}"
        assert row.wer == pytest.approx(score(row.reference, row.hypothesis).wer)
        assert math.isfinite(float(row.transcript_ms))
    headline = json.loads((run_dir / "summary.json").read_text())
    assert headline["runs"] == 1 and headline["turns"] == 2 and headline["utterances"] == 3
    assert headline["wer"] <= 0.34  # short, clean recordings; Whisper tiny.en gets them
    assert (run_dir / "timelines" / "run-1" / "timeline.jsonl").stat().st_size > 0


def test_load_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, root = run_notebook(
        "03_load_test.ipynb",
        tmp_path,
        monkeypatch,
        {"SAGELAB_NB_USERS": "3", "SAGELAB_NB_SPAWN_RATE": "3", "SAGELAB_NB_RUN_TIME": "8s"},
    )
    run_dir = only_run_dir(root, "loadtest")
    assert_draws(nb, "plot", "cdf", "per-user")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["users"] == 3 and summary["sessions"] == 3
    assert summary["failures"] == 0 and summary["error_rate"] == 0
    assert summary["close_codes"] == {"1000": 3}
    assert summary["metrics"]["first_audio"]["n"] >= 3
    assert "sessions 3, failures 0" in printed(nb, "summary")

    per_user = pd.read_csv(run_dir / "per_user.csv", index_col=0)
    assert len(per_user) == 3
    assert (per_user["replies"] >= 1).all() and (per_user["failures"] == 0).all()
    assert per_user["first_audio_p50_ms"].notna().all()
    # The per-user replies add up to the summary's count, both read from the same raw logs.
    assert per_user["replies"].sum() == summary["metrics"]["first_audio"]["n"]


def test_prompt_tool_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb, root = run_notebook(
        "04_prompt_tool_lab.ipynb",
        tmp_path,
        monkeypatch,
        {"SAGELAB_NB_STEPS": "2", "SAGELAB_NB_REPEAT": "1"},  # search, then the update
    )
    run_dir = only_run_dir(root, "lab")
    comparison = pd.read_csv(run_dir / "comparison.csv", index_col=0)
    assert list(comparison.index) == ["A: full access", "B: read-only, snappy"]
    full, read_only = comparison.loc["A: full access"], comparison.loc["B: read-only, snappy"]
    # Each variant's pushed first message is what its agent said first.
    assert full["greeting"] == "Hi, I'm Audio Sage. Search, read or update an account?"
    assert read_only["greeting"].startswith("Hello! Read-only today")
    # The tool set: only the agent that was given update_record called it.
    assert full["tool calls"] == "search_records, update_record"
    assert read_only["tool calls"] == "search_records"
    # The VAD's end-of-turn silence (500 vs 300 ms) shows in the server's endpointing time.
    assert full["endpointing p50 ms"] - read_only["endpointing p50 ms"] >= 100

    results = json.loads((run_dir / "results.json").read_text())
    [full_run] = results["A: full access"]
    [read_only_run] = results["B: read-only, snappy"]

    def failed(run: dict, step: int) -> set[str]:
        return {c["name"] for c in run["steps"][step]["checks"] if not c["passed"]}

    # Full access does both; only a latency budget may fail on a loaded machine.
    assert all(name.startswith("within_ms.") for s in (0, 1) for name in failed(full_run, s))
    [update] = full_run["steps"][1]["tools"]
    assert (update["name"], update["is_error"]) == ("update_record", False)
    assert "paused" in full_run["steps"][1]["reply"]
    # Read-only searches fine, and cannot update: no call, and the agent says why.
    assert all(name.startswith("within_ms.") for name in failed(read_only_run, 0))
    assert "tool update_record" in failed(read_only_run, 1)
    assert "not available" in read_only_run["steps"][1]["reply"]
    assert read_only_run["steps"][1]["tools"] == []

    steps = pd.read_csv(run_dir / "steps.csv", header=[0, 1], index_col=0)
    assert set(steps.columns.get_level_values(0)) == set(comparison.index)
    html = [o for o in cell(nb, "timelines").outputs if "text/html" in o.get("data", {})]
    assert html and html[0]["data"]["text/html"].count("data:image/png;base64,") == 2
    assert (run_dir / "timeline-a.png").is_file() and (run_dir / "timeline-b.png").is_file()
