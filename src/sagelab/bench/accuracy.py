"""``sagelab bench accuracy``: WER/CER of the server's ``user_transcript`` events.

Each utterance of a manifest (JSONL with ``audio`` and ``text``, as in ``data/speech``) is
streamed in real time as a user turn, followed by silence so the agent's endpointing closes the
turn; every ``user_transcript`` that arrives for it is joined (an utterance with a long pause
may be split into two turns, and both halves count). The session is text-only, so the agent's
own replies do not cost TTS time.

Scores come from ``sagelab.metrics``: the heard text is the ``user_text`` of the utterance's
turns in ``turn_table``, WER/CER are ``accuracy_table`` (``sagelab.metrics.accuracy``'s
normalisation), and each utterance's transcript latency (end of speech sent → final
``user_transcript``) is the turn table's ``transcript_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagelab.bench.stats import Summary
from sagelab.client import Session
from sagelab.metrics import accuracy_table, score, turn_table
from sagelab.metrics.accuracy import Accuracy


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path
    text: str


@dataclass(frozen=True)
class Heard:
    """What the agent transcribed of one utterance, and how long its transcripts took."""

    text: str
    transcript_ms: list[float] = field(default_factory=list)


def read_manifest(path: Path) -> list[Utterance]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(
                Utterance(str(row.get("id", n)), path.parent / row["audio"], str(row["text"]))
            )
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(
                f"{path}:{n}: each line needs JSON with 'audio' and 'text' ({exc})"
            ) from exc
    return items


async def transcribe_manifest(
    url: str,
    agent_id: str,
    utterances: list[Utterance],
    *,
    trailing_silence_ms: int = 1200,
    settle_s: float = 0.6,
    on_done: Callable[[str, Accuracy], None] | None = None,
) -> list[tuple[Utterance, Heard]]:
    results: list[tuple[Utterance, Heard]] = []
    async with Session.connect(url, agent_id, text_only=True) as session:
        await asyncio.sleep(0.5)  # let the greeting pass
        for utt in utterances:
            mark = session.mark()
            await session.send_audio(utt.audio, trailing_silence_ms=trailing_silence_ms)
            with contextlib.suppress(TimeoutError):  # a missed utterance scores as deleted
                await session.wait_for("user_transcript", since=mark, timeout=15)
            await asyncio.sleep(settle_s)
            turns = turn_table(session.timeline.events[mark:])
            heard = Heard(
                " ".join(t for t in turns["user_text"] if isinstance(t, str) and t),
                [float(x) for x in turns["transcript_ms"].dropna()],
            )
            results.append((utt, heard))
            if on_done is not None:
                on_done(utt.id, score(utt.text, heard.text))
    return results


def summarize(results: list[tuple[Utterance, Heard]]) -> dict[str, Any]:
    table = accuracy_table((u.id, u.text, h.text) for u, h in results)
    return {
        "utterances": len(results),
        "wer": round(table.attrs["wer"], 4),
        "cer": round(table.attrs["cer"], 4),
        "transcript_ms": Summary.of(x for _, h in results for x in h.transcript_ms).as_dict(1),
        "per_utterance": [
            {"id": r.id, "reference": r.reference, "hypothesis": r.hypothesis,
             "wer": round(r.wer, 4), "cer": round(r.cer, 4)}
            for r in table.itertuples()
        ],
    }  # fmt: skip
