"""Piper's time to first audio: the first clause against the whole first sentence.

    python -m sagelab.bench.tts_first_audio [--repeats 5] [--json out.json]

For each reply, ``PiperTTS.synthesize`` is advanced to its first chunk (what the caller can
send first), with ``first_clause_chars=None`` (whole first sentence) and with the default 50
(the first clause of a long first sentence), on 1 and on 2 ONNX Runtime threads. Figures are
p50/p95/p99 over ``repeats`` runs of every reply: wall-clock on whatever else the machine
runs (the load average is reported with them) and process CPU time (what the call costs
a core, whatever the load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sagelab.agents.local.tts import PiperTTS
from sagelab.bench.stats import Summary

REPLIES = (
    "I found three flights to Lisbon tomorrow morning, and the cheapest one leaves at six "
    "forty with a short stop in Madrid.",
    "Sure, let me check that for you: the museum opens at nine and closes at five, except on "
    "Mondays.",
    "Your table for four is booked at seven p.m. on Friday, under the name Dashwood.",
    "Well, that depends on the weather, but most people take the coastal path.",
    "Okay. The next train leaves at ten past eight.",
)


def first_chunk(tts: PiperTTS, text: str) -> tuple[float, float, float, float]:
    """(ms to the first chunk, its CPU ms, seconds of audio in it, ms for the whole reply)."""
    c0, t0 = time.process_time(), time.perf_counter()
    chunks = tts.synthesize(text)
    first = next(chunks)
    first_ms = (time.perf_counter() - t0) * 1000
    first_cpu = (time.process_time() - c0) * 1000
    for _ in chunks:
        pass
    return first_ms, first_cpu, first.duration_s, (time.perf_counter() - t0) * 1000


def run(repeats: int) -> dict[str, Any]:
    rows = []
    for threads in (1, 2):
        for label, clause in (("whole first sentence", None), ("first clause (50)", 50)):
            tts = PiperTTS(cpu_threads=threads, first_clause_chars=clause)
            tts.warmup()
            first: list[float] = []
            cpu: list[float] = []
            audio: list[float] = []
            total: list[float] = []
            for _ in range(repeats):
                for text in REPLIES:
                    f, c, a, t = first_chunk(tts, text)
                    first.append(f)
                    cpu.append(c)
                    audio.append(a)
                    total.append(t)
            rows.append(
                {
                    "threads": threads,
                    "first_piece": label,
                    "first_chunk_ms": Summary.of(first).as_dict(0),
                    "first_chunk_cpu_ms": Summary.of(cpu).as_dict(0),
                    "first_chunk_audio_s": Summary.of(audio).as_dict(2),
                    "whole_reply_ms": Summary.of(total).as_dict(0),
                }
            )
            print(f"  {threads} thread(s), {label}: {rows[-1]['first_chunk_ms']}", flush=True)
    return {"replies": list(REPLIES), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    result = run(args.repeats)
    result["command"] = " ".join(["python -m sagelab.bench.tts_first_audio", *sys.argv[1:]])
    result["loadavg"] = {"start": load_start, "end": os.getloadavg()}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
