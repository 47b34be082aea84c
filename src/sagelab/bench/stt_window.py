"""Whisper on a window fitted to the turn vs the padded 30 s window: WER and latency.

    python -m sagelab.bench.stt_window --manifest data/speech/manifest.jsonl \\
        [--repeats 3] [--json out.json] [--only window,batch,threads,prefix]

Sections:

* ``window``: every utterance of the manifest through :class:`WhisperSTT` with each window
  setting (the full 30 s window; fitted windows with their guards; a fitted window without
  the guards), ``repeats`` times, one call at a time, one thread. WER is pooled over the set
  with ``sagelab.metrics.accuracy``'s normalisation; latency p50/p95/p99 is over every call;
  ``fallbacks`` counts calls whose guards sent them back to the full window.
* ``batch``: k turns of the same fitted window in one CTranslate2 ``generate`` call against
  the same k turns one after the other (what batching concurrent sessions would gain).
* ``threads``: one call with 1 and with 2 intra-op threads (what "threads from the load"
  could gain when the machine has a core to spare).
* ``prefix``: transcribing while the user speaks: the cost of re-transcribing the turn every
  second of speech against once at the end.

Latencies are wall-clock on whatever else the machine runs: quote its load with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.agents.local.stt import WhisperSTT, fitted_window_frames
from sagelab.audio import SAMPLE_RATE, load_audio, to_float32
from sagelab.bench.stats import Summary
from sagelab.metrics.accuracy import normalize


@dataclass(frozen=True)
class Item:
    id: str
    pcm: np.ndarray
    text: str


def read_items(manifest: Path) -> list[Item]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [Item(r["id"], load_audio(manifest.parent / r["audio"]), r["text"]) for r in rows]


def pooled_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


WINDOW_SETTINGS: dict[str, dict[str, Any]] = {
    "full 30 s": {"window": "full"},
    "fit 10 s, then full (default)": {"window": "fit"},
    "fit 5 s, retry 10 s": {"window": "fit", "min_window_s": 5},
    "fit 5 s, then full": {"window": "fit", "min_window_s": 5, "retry_window_s": None},
    "fit 3 s, retry 10 s": {"window": "fit", "min_window_s": 3},
    "fit 5 s, pad 1 s, retry 10 s": {"window": "fit", "min_window_s": 5, "window_pad_s": 1},
    "naive: the audio alone, no guards": {
        "window": "fit",
        "min_window_s": 1,
        "window_pad_s": 0,
        "fallback": False,
    },
}


def window_section(items: list[Item], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for label, options in WINDOW_SETTINGS.items():
        stt = WhisperSTT(cpu_threads=1, num_workers=1, **options)
        stt.warmup()
        latency: list[float] = []
        cpu: list[float] = []
        fallbacks = 0
        hypotheses: list[str] = []
        windows: list[float] = []
        for _ in range(repeats):
            hypotheses = []
            for item in items:
                c0 = time.process_time()
                t = stt.transcribe(item.pcm)
                cpu.append((time.process_time() - c0) * 1000)
                latency.append(t.elapsed_s * 1000)
                fallbacks += t.fell_back
                hypotheses.append(t.text)
                windows.append(t.window_s or 0.0)
        wrong = [
            {"id": i.id, "heard": h}
            for i, h in zip(items, hypotheses, strict=True)
            if normalize(h) != normalize(i.text)
        ]
        rows.append(
            {
                "setting": label,
                "wer": round(pooled_wer([i.text for i in items], hypotheses), 4),
                "latency_ms": Summary.of(latency).as_dict(0),
                "cpu_ms": Summary.of(cpu).as_dict(0),
                "fallbacks": fallbacks,
                "calls": len(latency),
                "window_s_p50": float(np.median(windows)),
                "not_exact": wrong,
            }
        )
        print(
            f"  {label}: wer {rows[-1]['wer']} fallbacks {fallbacks} "
            f"latency {rows[-1]['latency_ms']} cpu {rows[-1]['cpu_ms']}",
            flush=True,
        )
    return rows


def _generate(stt: WhisperSTT, windows: np.ndarray) -> None:
    import ctranslate2

    _tok, prompt, suppressed = stt._fit_prompt()
    stt.model.model.generate(
        ctranslate2.StorageView.from_array(windows),
        [prompt] * windows.shape[0],
        max_length=len(prompt) + 32,  # the budget of a 3 s turn
        beam_size=1,
        suppress_blank=True,
        suppress_tokens=suppressed,
    )


def _windows(stt: WhisperSTT, items: list[Item], frames: int) -> np.ndarray:
    out = np.zeros((len(items), 80, frames), dtype=np.float32)
    for n, item in enumerate(items):
        features = stt.model.feature_extractor(to_float32(item.pcm))
        content = min(features.shape[-1] - 1, frames)
        out[n, :, :content] = features[:, :content]
    return out


def batch_section(items: list[Item], repeats: int) -> list[dict[str, Any]]:
    """k turns in one generate call vs k calls, one thread, 10 s windows (the size at which
    no decode of the set loops, so that every sequence ends by itself). Wall and CPU time."""
    stt = WhisperSTT(cpu_threads=1, num_workers=1, window="fit")
    stt.warmup()
    short = [i for i in items if i.pcm.size / SAMPLE_RATE <= 3.0]
    rows = []
    for k in (1, 2, 4):
        group = short[:k]
        windows = _windows(stt, group, 1000)
        one_by_one: list[float] = []
        batched: list[float] = []
        one_by_one_cpu: list[float] = []
        batched_cpu: list[float] = []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            for n in range(k):
                _generate(stt, windows[n : n + 1])
            one_by_one.append((time.perf_counter() - t0) * 1000)
            one_by_one_cpu.append((time.process_time() - c0) * 1000)
            c0, t0 = time.process_time(), time.perf_counter()
            _generate(stt, windows)
            batched.append((time.perf_counter() - t0) * 1000)
            batched_cpu.append((time.process_time() - c0) * 1000)
        rows.append(
            {
                "turns": k,
                "sequential_ms": Summary.of(one_by_one).as_dict(0),
                "batched_ms": Summary.of(batched).as_dict(0),
                "sequential_cpu_ms": Summary.of(one_by_one_cpu).as_dict(0),
                "batched_cpu_ms": Summary.of(batched_cpu).as_dict(0),
            }
        )
        print(f"  batch {k}: {rows[-1]}", flush=True)
    return rows


def threads_section(items: list[Item], repeats: int) -> list[dict[str, Any]]:
    """One call at a time (the model has the machine to itself) on 1 thread, and with
    ``max_threads=2`` (which then takes the 2-thread replica)."""
    rows = []
    for max_threads in (1, 2):
        for window in ("fit", "full"):
            stt = WhisperSTT(
                cpu_threads=1,
                max_threads=max_threads,
                num_workers=1,
                window=window,  # type: ignore[arg-type]
            )
            stt.warmup()
            latency = [
                stt.transcribe(item.pcm).elapsed_s * 1000 for _ in range(repeats) for item in items
            ]
            rows.append(
                {
                    "max_threads": max_threads,
                    "window": window,
                    "latency_ms": Summary.of(latency).as_dict(0),
                }
            )
            print(f"  max_threads {max_threads} {window}: {rows[-1]['latency_ms']}", flush=True)
    return rows


def prefix_section(items: list[Item]) -> dict[str, Any]:
    """Re-transcribing the turn every second while it is spoken vs once at the end."""
    stt = WhisperSTT(cpu_threads=1, num_workers=1, window="fit")
    stt.warmup()
    per_turn: list[dict[str, Any]] = []
    for item in items:
        duration = item.pcm.size / SAMPLE_RATE
        if duration < 3.0:
            continue
        c0 = time.process_time()
        for cut in np.arange(1.0, duration, 1.0):
            stt.transcribe(item.pcm[: int(cut * SAMPLE_RATE)])
        spent = time.process_time() - c0
        c0 = time.process_time()
        stt.transcribe(item.pcm)
        final = time.process_time() - c0
        per_turn.append(
            {
                "id": item.id,
                "duration_s": round(duration, 2),
                "while_speaking_cpu_ms": round(spent * 1000),
                "at_end_cpu_ms": round(final * 1000),
                "window_s": fitted_window_frames(int(duration * 100), 5, 2) / 100,
            }
        )
    return {
        "turns": per_turn,
        "compute_ratio": round(
            sum(t["while_speaking_cpu_ms"] + t["at_end_cpu_ms"] for t in per_turn)
            / max(1, sum(t["at_end_cpu_ms"] for t in per_turn)),
            2,
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="window,batch,threads,prefix")
    args = parser.parse_args(argv)
    items = read_items(args.manifest)
    sections = set(args.only.split(","))
    result: dict[str, Any] = {
        "command": " ".join(["python -m sagelab.bench.stt_window", *sys.argv[1:]]),
        "loadavg_start": os.getloadavg(),
        "utterances": len(items),
        "speech_s": round(sum(i.pcm.size for i in items) / SAMPLE_RATE, 1),
    }
    if "window" in sections:
        print("window:", flush=True)
        result["window"] = window_section(items, args.repeats)
    if "batch" in sections:
        print("batch:", flush=True)
        result["batch"] = batch_section(items, max(5, args.repeats))
    if "threads" in sections:
        print("threads:", flush=True)
        result["threads"] = threads_section(items, args.repeats)
    if "prefix" in sections:
        print("prefix:", flush=True)
        result["prefix"] = prefix_section(items)
    result["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
