"""``sagelab bench pipeline``: the demo conversation with ``audio-sage``, measured per stage.

Every user turn of ``data/demo/conversation.yaml`` is streamed in real time; the server reports
each turn's stages (``?sagelab_stages=1``). This module only drives the conversation; every
figure is computed afterwards from the recorded timelines by ``sagelab.metrics`` (the same
definitions as ``bench run``, the scenarios and the notebooks):

* voice-to-voice: end of speech in the audio actually sent → first audio frame of the reply;
* time to first audio: the reply's ``user_transcript`` → its first audio frame;
* interruption latency: onset of the barge-in speech → ``interruption`` received;
* stages (server side): endpointing delay (audio after the real end of speech that the VAD
  needed to decide), STT, brain, TTS to first audio; STT real-time factor = STT compute time /
  utterance length; TTS real-time factor = synthesis time / audio synthesised;
* stutter: the playout model over the received audio (no jitter buffer).

The latency budget (:func:`latency_budget`) splits voice-to-voice into the stages on its
critical path, each with its p50 / p95 and its share of the mean voice-to-voice.

The capacity search runs the same conversation in K concurrent sessions for growing K and
reports the largest K whose voice-to-voice p95 stays within the budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sagelab.bench.stats import Summary
from sagelab.client import Session, SessionError
from sagelab.metrics import playout, turn_table


@dataclass
class ScenarioTurn:
    audio: Path
    text: str
    barge_after_ms: int | None = None


@dataclass
class RunResult:
    """One session's turn table (``sagelab.metrics.turn_table``), its stutter and errors."""

    turns: pd.DataFrame = field(default_factory=lambda: turn_table([]))
    stutter: pd.DataFrame | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def answers(self) -> pd.DataFrame:
        """The turns that answered the user's speech (not the greeting)."""
        return self.turns[self.turns["user_input"] == "speech"]

    @property
    def transcripts(self) -> list[str]:
        return [str(t) for t in self.answers["user_text"] if isinstance(t, str)]


def from_turn(event_id: int) -> Callable[[Any], bool]:
    """A ``wait_for`` predicate: an event of turn ``event_id`` or of a later one."""
    return lambda e: (e.event_id or 0) >= event_id


def after_turn(event_id: int) -> Callable[[Any], bool]:
    """A ``wait_for`` predicate: an event of a turn later than ``event_id``."""
    return lambda e: (e.event_id or 0) > event_id


def load_conversation(path: Path) -> tuple[str, list[ScenarioTurn]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    turns = []
    for item in data["turns"]:
        barge = item.get("barge_in") or {}
        turns.append(
            ScenarioTurn(path.parent / item["audio"], str(item["text"]), barge.get("after_ms"))
        )
    return str(data.get("agent", "audio-sage")), turns


async def run_conversation(
    url: str, agent_id: str, turns: list[ScenarioTurn], chunk_ms: int = 100
) -> RunResult:
    """Hold the scenario's conversation, streaming its audio in ``chunk_ms`` chunks; what it
    measured is computed from its timeline."""
    errors: list[str] = []
    session: Session | None = None
    try:
        async with Session.connect(
            url, agent_id, stages=True, record_audio=False, chunk_ms=chunk_ms
        ) as s:
            session = s
            await s.wait_for("agent_response", timeout=30)
            await s.wait_agent_done(timeout=60)
            skip_next = False
            for i, turn in enumerate(turns):
                if skip_next:
                    skip_next = False
                    continue
                mark = s.mark()
                await s.send_audio(turn.audio, trailing_silence_ms=1000)
                reply = await s.wait_for("agent_response", since=mark, timeout=30)
                await s.wait_for(
                    "audio", since=mark, timeout=30,
                    predicate=from_turn(reply.event_id),
                )  # fmt: skip
                if turn.barge_after_ms is not None and i + 1 < len(turns):
                    await asyncio.sleep(turn.barge_after_ms / 1000)
                    bmark = s.mark()
                    await s.send_audio(turns[i + 1].audio, trailing_silence_ms=1000)
                    cut = await s.wait_for("interruption", since=bmark, timeout=10)
                    breply = await s.wait_for(
                        "agent_response", since=bmark, timeout=30,
                        predicate=after_turn(cut.event_id),
                    )  # fmt: skip
                    await s.wait_for(
                        "audio", since=bmark, timeout=30,
                        predicate=from_turn(breply.event_id),
                    )  # fmt: skip
                    skip_next = True
                await s.wait_agent_done(timeout=60)
    except (SessionError, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    if session is None:
        return RunResult(errors=errors)
    return RunResult(turn_table(session.timeline), playout(session.timeline).turns, errors)


def merge(results: list[RunResult]) -> RunResult:
    """Several sessions as one: their tables stacked, ``session`` numbered by run."""
    turns = [r.turns.assign(session=i) for i, r in enumerate(results) if len(r.turns)]
    stutter = [
        r.stutter.assign(session=i)
        for i, r in enumerate(results)
        if r.stutter is not None and len(r.stutter)
    ]
    return RunResult(
        pd.concat(turns, ignore_index=True) if turns else turn_table([]),
        pd.concat(stutter, ignore_index=True) if stutter else None,
        [e for r in results for e in r.errors],
    )


def _ratio(df: pd.DataFrame, num: str | list[str], den: str) -> list[float]:
    """Per-turn ratio of two stage columns, where the turn reported both."""
    nums = [num] if isinstance(num, str) else num
    present = [c for c in nums if c in df.columns]
    if not present or den not in df.columns:
        return []
    top = df[present].bfill(axis=1).iloc[:, 0]  # the first of the named stages it reported
    out = top / df[den].where(df[den] > 0)
    return [float(x) for x in out.dropna()]


def summarize(r: RunResult) -> dict[str, Any]:
    answers = r.answers
    cut = r.turns[r.turns["interrupted"].astype(bool)]
    stages = sorted(
        (c for c in answers.columns if c.startswith("stage_") and c.endswith("_ms")),
        key=lambda c: c.removeprefix("stage_").removesuffix("_ms"),
    )
    stutter = r.stutter if r.stutter is not None else pd.DataFrame()
    gaps = float(stutter["gap_ms"].sum()) if len(stutter) else 0.0
    audio = float(stutter["audio_ms"].sum()) if len(stutter) else 0.0
    return {
        "voice_to_voice_ms": Summary.of(answers["voice_to_voice_ms"]).as_dict(1),
        "ttfa_ms": Summary.of(answers["ttfa_ms"]).as_dict(1),
        "interruption_ms": Summary.of(cut["interruption_ms"]).as_dict(1),
        "stages_ms": {
            c.removeprefix("stage_").removesuffix("_ms"): Summary.of(answers[c]).as_dict(1)
            for c in stages
        },
        "stt_rtf": Summary.of(
            _ratio(answers, ["stage_stt_compute_ms", "stage_stt_ms"], "stage_utterance_ms")
        ).as_dict(3),
        "tts_rtf": Summary.of(_ratio(answers, "stage_tts_synth_ms", "stage_tts_audio_ms")).as_dict(
            3
        ),
        "stutter": {
            "underruns": int(stutter["underruns"].sum()) if len(stutter) else 0,
            "stutter_ratio": round(gaps / (gaps + audio), 5) if gaps + audio > 0 else None,
        },
        "errors": r.errors,
    }


# The stages on the path from the end of the user's speech to the reply's first audio, in
# order, as the local agent reports them; a nested stage is part of the one above it.
BUDGET_STAGES: list[tuple[str, str | None, str]] = [
    ("endpointing", None, "audio the turn-taker waited after the end of speech to decide"),
    ("eot_model", "endpointing", "end-of-turn model, asked to answered (when it decided)"),
    ("stt", None, "speech-to-text still running after the decision"),
    ("tts_first_audio", None, "reply started to first audio: brain's first sentence + TTS"),
    ("brain_first_text", "tts_first_audio", "brain to its first text"),
    ("tool", "tts_first_audio", "tool calls (turns that made one)"),
]


def latency_budget(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Where voice-to-voice goes, from a :func:`summarize` result (so also from a saved report).

    Each row: the stage's p50 / p95 over the turns that reported it, and its **share** of the
    mean voice-to-voice: its mean times the fraction of turns that had it, over the mean
    voice-to-voice, so the top-level shares and ``other`` add up to 100 %. ``other`` is what no
    stage covers: the VAD's own buffering, transport both ways, the server's audio lead, and
    waiting for the event loop or a model worker between stages.
    """
    v2v = summary["voice_to_voice_ms"]
    total, turns = v2v.get("mean"), v2v.get("n") or 0
    stages = summary.get("stages_ms", {})
    rows: list[dict[str, Any]] = []
    covered = 0.0
    for name, parent, meaning in BUDGET_STAGES:
        st = stages.get(name)
        if not st or not st.get("n"):
            continue
        per_turn = st["mean"] * min(1.0, st["n"] / turns) if turns else None
        share = per_turn / total if per_turn is not None and total else None
        if parent is None and per_turn is not None:
            covered += per_turn
        rows.append(
            {
                "stage": name,
                "part_of": parent,
                "p50_ms": st["p50"],
                "p95_ms": st["p95"],
                "n": st["n"],
                "share": None if share is None else round(share, 3),
                "meaning": meaning,
            }
        )
    if total:
        rows.append(
            {
                "stage": "other",
                "part_of": None,
                "p50_ms": None,
                "p95_ms": None,
                "n": turns,
                "share": round((total - covered) / total, 3),
                "meaning": "not in any stage: VAD buffering, transport, audio lead, queueing",
            }
        )
    rows.append(
        {
            "stage": "voice_to_voice",
            "part_of": None,
            "p50_ms": v2v.get("p50"),
            "p95_ms": v2v.get("p95"),
            "n": turns,
            "share": 1.0 if total else None,
            "meaning": "end of speech sent to first reply audio received (client side)",
        }
    )
    return rows


def budget_markdown(rows: list[dict[str, Any]]) -> str:
    """The budget as a Markdown table (for the docs and the CLI)."""

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f}"

    lines = ["| stage | p50 ms | p95 ms | share of v2v | n |", "|---|---|---|---|---|"]
    for r in rows:
        name = r["stage"] if r["part_of"] is None else f"↳ {r['stage']} (in {r['part_of']})"
        share = "–" if r["share"] is None else f"{100 * r['share']:.0f} %"
        lines.append(f"| {name} | {ms(r['p50_ms'])} | {ms(r['p95_ms'])} | {share} | {r['n']} |")
    return "\n".join(lines)


async def run_pipeline_bench(
    url: str,
    conversation: Path,
    *,
    runs: int,
    budget_p95_ms: float = 1500.0,
    max_sessions: int = 0,
    on_progress: Callable[[str], None] | None = None,
    plots_dir: Path | None = None,
    chunk_ms: int = 100,
    agent_id: str | None = None,
) -> dict[str, Any]:
    """Single-session runs, then the capacity search; ``plots_dir`` gets the latency CDF of
    the single runs and stutter against concurrent sessions, drawn from the same tables.

    ``chunk_ms`` is the client's audio chunk: the server hears nothing of a chunk until all of
    it has arrived, so it is also the floor under interruption latency. ``agent_id`` talks to
    another agent than the one the conversation names (the same turns, e.g. the LLM brain)."""
    named, turns = load_conversation(conversation)
    agent_id = agent_id or named
    single: list[RunResult] = []
    for i in range(runs):
        single.append(await run_conversation(url, agent_id, turns, chunk_ms))
        if on_progress:
            on_progress(f"run {i + 1}/{runs}")
    single_merged = merge(single)
    report: dict[str, Any] = {
        "agent_id": agent_id,
        "runs": runs,
        "chunk_ms": chunk_ms,
        "single": summarize(single_merged),
    }
    report["budget"] = latency_budget(report["single"])
    stutter_by_load = [_with_load(single_merged.stutter, 1)]
    capacity: list[dict[str, Any]] = []
    best = 0
    k = 1
    while max_sessions > 0 and k <= max_sessions:
        merged = merge(
            list(
                await asyncio.gather(
                    *(run_conversation(url, agent_id, turns, chunk_ms) for _ in range(k))
                )
            )
        )
        stutter_by_load.append(_with_load(merged.stutter, k))
        p95 = Summary.of(merged.answers["voice_to_voice_ms"]).p95
        ok = not merged.errors and p95 <= budget_p95_ms
        capacity.append(
            {"sessions": k, "v2v_p95_ms": round(p95, 1), "ok": ok, "errors": len(merged.errors)}
        )
        if on_progress:
            on_progress(f"{k} concurrent sessions: v2v p95 {p95:.0f} ms")
        if not ok:
            break
        best = k
        k += 1
    report["capacity"] = {
        "budget_p95_ms": budget_p95_ms,
        "steps": capacity,
        "max_sessions_within_budget": best,
    }
    if plots_dir is not None:
        report["plots"] = _plots(single_merged.answers, stutter_by_load, plots_dir)
    return report


def _with_load(stutter: pd.DataFrame | None, sessions: int) -> pd.DataFrame:
    if stutter is None or not len(stutter):
        return pd.DataFrame()
    return stutter.assign(sessions=sessions)


def _plots(answers: pd.DataFrame, stutter: list[pd.DataFrame], directory: Path) -> list[str]:
    from sagelab.metrics.plots import latency_cdf, save_figure, stutter_vs_load

    paths = [save_figure(latency_cdf(answers, title="Pipeline latency by stage"),
                         directory / "latency_cdf.png")]  # fmt: skip
    frames = [f for f in stutter if len(f)]
    if frames:
        table = pd.concat(frames, ignore_index=True)
        figure = stutter_vs_load(table, title="Stutter against concurrent sessions")
        paths.append(save_figure(figure, directory / "stutter_vs_load.png"))
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> None:
    """``python -m sagelab.bench.pipeline REPORT.json``: the budget of a saved ``--json``
    report (the last JSON object in the file), as Markdown."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path)
    args = parser.parse_args(argv)
    text = args.report.read_text(encoding="utf-8").strip().splitlines()
    report = json.loads(text[-1])
    print(budget_markdown(latency_budget(report["single"])))


if __name__ == "__main__":
    main()
