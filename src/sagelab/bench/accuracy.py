"""``sagelab bench accuracy``: WER/CER of the server's ``user_transcript`` events.

Each utterance of a manifest (JSONL with ``audio`` and ``text``, as in ``data/speech``) is
streamed in real time as a user turn, followed by silence so the agent's endpointing closes the
turn; every ``user_transcript`` that arrives for it is joined (an utterance with a long pause
may be split into two turns, and both halves count). The session is text-only, so the agent's
own replies do not cost TTS time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sagelab.client import Session
from sagelab.metrics.accuracy import Accuracy, overall, score


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path
    text: str


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
) -> list[tuple[Utterance, Accuracy]]:
    results: list[tuple[Utterance, Accuracy]] = []
    async with Session.connect(url, agent_id, text_only=True) as session:
        await asyncio.sleep(0.5)  # let the greeting pass
        for utt in utterances:
            mark = session.mark()
            await session.send_audio(utt.audio, trailing_silence_ms=trailing_silence_ms)
            with contextlib.suppress(TimeoutError):  # a missed utterance scores as deleted
                await session.wait_for("user_transcript", since=mark, timeout=15)
            await asyncio.sleep(settle_s)
            heard = " ".join(
                e.data.get("user_transcript", "")
                for e in session.timeline.events[mark:]
                if e.type == "user_transcript"
            )
            acc = score(utt.text, heard)
            results.append((utt, acc))
            if on_done is not None:
                on_done(utt.id, acc)
    return results


def summarize(results: list[tuple[Utterance, Accuracy]]) -> dict[str, Any]:
    wer, cer = overall([a for _, a in results])
    return {
        "utterances": len(results),
        "wer": round(wer, 4),
        "cer": round(cer, 4),
        "per_utterance": [
            {"id": u.id, **{k: v for k, v in asdict(a).items() if k in ("reference", "hypothesis")},
             "wer": round(a.wer, 4), "cer": round(a.cer, 4)}
            for u, a in results
        ],
    }  # fmt: skip
