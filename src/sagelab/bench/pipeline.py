"""``sagelab bench pipeline``: the demo conversation with ``audio-sage``, measured per stage.

Every user turn of ``data/demo/conversation.yaml`` is streamed in real time; the server reports
each turn's stages (``?sagelab_stages=1``), and the client times what the user experiences:

* voice-to-voice: end of speech in the audio actually sent → first audio frame of the reply;
* interruption latency: first chunk of barge-in speech sent → ``interruption`` received;
* stages (server side): endpointing delay (audio after the real end of speech that the VAD
  needed to decide), STT, brain, TTS to first audio; STT real-time factor = STT time /
  utterance length.

The capacity search runs the same conversation in K concurrent sessions for growing K and
reports the largest K whose voice-to-voice p95 stays within the budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sagelab.bench.stats import Summary
from sagelab.client import Session, SessionError


@dataclass
class ScenarioTurn:
    audio: Path
    text: str
    barge_after_ms: int | None = None


@dataclass
class RunResult:
    v2v_ms: list[float] = field(default_factory=list)
    interruption_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    stt_rtf: list[float] = field(default_factory=list)
    tts_rtf: list[float] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_conversation(path: Path) -> tuple[str, list[ScenarioTurn]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    turns = []
    for item in data["turns"]:
        barge = item.get("barge_in") or {}
        turns.append(
            ScenarioTurn(path.parent / item["audio"], str(item["text"]), barge.get("after_ms"))
        )
    return str(data.get("agent", "audio-sage")), turns


async def run_conversation(url: str, agent_id: str, turns: list[ScenarioTurn]) -> RunResult:
    result = RunResult()
    try:
        async with Session.connect(url, agent_id, stages=True, record_audio=False) as s:
            await s.wait_for("agent_response", timeout=30)
            await s.wait_agent_done(timeout=60)
            skip_next = False
            for i, turn in enumerate(turns):
                if skip_next:
                    skip_next = False
                    continue
                mark = s.mark()
                sent = await s.send_audio(turn.audio, trailing_silence_ms=1000)
                reply = await s.wait_for("agent_response", since=mark, timeout=30)
                first = await s.wait_for(
                    "audio", since=mark, timeout=30,
                    predicate=lambda e, r=reply: (e.event_id or 0) >= r.event_id,
                )  # fmt: skip
                result.v2v_ms.append((first.t_ns - sent.speech_end_ns) / 1e6)
                _collect_stages(s, mark, reply.event_id, result)
                if turn.barge_after_ms is not None and i + 1 < len(turns):
                    await asyncio.sleep(turn.barge_after_ms / 1000)
                    barge = turns[i + 1]
                    bmark = s.mark()
                    bsent = await s.send_audio(barge.audio, trailing_silence_ms=1000)
                    cut = await s.wait_for("interruption", since=bmark, timeout=10)
                    result.interruption_ms.append((cut.t_ns - bsent.speech_start_ns) / 1e6)
                    breply = await s.wait_for(
                        "agent_response", since=bmark, timeout=30,
                        predicate=lambda e, c=cut: (e.event_id or 0) > c.event_id,
                    )  # fmt: skip
                    bfirst = await s.wait_for(
                        "audio", since=bmark, timeout=30,
                        predicate=lambda e, r=breply: (e.event_id or 0) >= r.event_id,
                    )  # fmt: skip
                    result.v2v_ms.append((bfirst.t_ns - bsent.speech_end_ns) / 1e6)
                    _collect_stages(s, bmark, breply.event_id, result)
                    skip_next = True
                await s.wait_agent_done(timeout=60)
    except (SessionError, TimeoutError) as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    return result


def _collect_stages(s: Session, mark: int, event_id: int, result: RunResult) -> None:
    stages: dict[str, float] = {}
    for e in s.timeline.events[mark:]:
        if e.type == "internal_sagelab_stage" and e.event_id == event_id:
            stages[e.data["stage"]] = float(e.data["ms"])
        elif e.type == "user_transcript" and e.event_id == event_id:
            result.transcripts.append(e.data.get("user_transcript", ""))
    for name, ms in stages.items():
        result.stages.setdefault(name, []).append(ms)
    if stages.get("tts_audio"):
        result.tts_rtf.append(stages.get("tts_synth", 0.0) / stages["tts_audio"])
    compute = stages.get("stt_compute", stages.get("stt"))
    if compute is not None and stages.get("utterance"):
        result.stt_rtf.append(compute / stages["utterance"])


def merge(results: list[RunResult]) -> RunResult:
    out = RunResult()
    for r in results:
        out.v2v_ms += r.v2v_ms
        out.interruption_ms += r.interruption_ms
        out.stt_rtf += r.stt_rtf
        out.tts_rtf += r.tts_rtf
        out.transcripts += r.transcripts
        out.errors += r.errors
        for k, v in r.stages.items():
            out.stages.setdefault(k, []).extend(v)
    return out


def summarize(r: RunResult) -> dict[str, Any]:
    return {
        "voice_to_voice_ms": Summary.of(r.v2v_ms).as_dict(1),
        "interruption_ms": Summary.of(r.interruption_ms).as_dict(1),
        "stages_ms": {k: Summary.of(v).as_dict(1) for k, v in sorted(r.stages.items())},
        "stt_rtf": Summary.of(r.stt_rtf).as_dict(3),
        "tts_rtf": Summary.of(r.tts_rtf).as_dict(3),
        "errors": r.errors,
    }


async def run_pipeline_bench(
    url: str,
    conversation: Path,
    *,
    runs: int,
    budget_p95_ms: float = 1500.0,
    max_sessions: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    agent_id, turns = load_conversation(conversation)
    single: list[RunResult] = []
    for i in range(runs):
        single.append(await run_conversation(url, agent_id, turns))
        if on_progress:
            on_progress(f"run {i + 1}/{runs}")
    report: dict[str, Any] = {
        "agent_id": agent_id,
        "runs": runs,
        "single": summarize(merge(single)),
    }
    capacity: list[dict[str, Any]] = []
    best = 0
    k = 1
    while max_sessions > 0 and k <= max_sessions:
        merged = merge(
            list(await asyncio.gather(*(run_conversation(url, agent_id, turns) for _ in range(k))))
        )
        p95 = Summary.of(merged.v2v_ms).p95
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
    return report
