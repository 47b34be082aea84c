"""End-of-turn policies on real speech: how often each cuts the user off, and how long it waits.

    python -m sagelab.bench.endofturn --manifest data/speech/manifest.jsonl \\
        [--json out.json] [--plot out.png] [--hesitation-ms 700]

Passages. Utterances of one speaker (by id prefix: the LibriVox reader, the card caller, the
alsa announcer, ...) are joined in manifest order into one stream, 2 s of digital silence
between them (as from a client with noise suppression), 0.5 s before the first and 3 s after the
last. Every reference utterance keeps its own pauses: the LibriVox sentences breathe at commas,
the alsa names pause ~350 ms between "front" and "center".

``--hesitation-ms`` adds a second, harder set: in every utterance of two or more words the
longest internal pause is stretched to that length by repeating its own room tone, like
a speaker who stops to think mid-sentence. Both sets are reported.

Each policy streams every passage in 20 ms chunks through :class:`VadTurnDetector` (Silero,
threshold 0.5) with ``end_silence_ms`` set to the policy's ``min_silence_ms``; at each of its
``speech_end`` events the :class:`EndOfTurnPolicy` decides, asking :class:`SmartTurn` with the
turn so far (from 0.5 s before its first ``speech_start``, at most the last 8 s) when it says
``ASK``. A speech_start before the decision resumes the same turn.

* **cut**: reference utterances with a turn end decided strictly inside them (between their
  energy start and energy end): the agent would have started answering mid-sentence.
* **wait**: from the utterance's energy end to the first turn end after it, in ms of audio;
  then with the model call that decided it added, as CPU time (what an idle core would take)
  and as wall time (what this machine gave).
* **late**: utterances whose turn did not end before the next utterance began (2 s later).

Model calls are cached per (passage, turn start, decision sample): policies that differ only in
threshold or fallback share them, and each call's own measured time is added to the waits it
decides. The machine may be shared: the model's wall and CPU time p50/p95/p99 and the load
average are reported with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sagelab.agents.local.endofturn import (
    MAX_AUDIO_S,
    EndOfTurnModel,
    EndOfTurnPolicy,
    Verdict,
    get_smart_turn,
)
from sagelab.agents.local.vad import VadTurnDetector
from sagelab.audio import SAMPLE_RATE, load_audio
from sagelab.audio.activity import energy_bounds, loud_frames
from sagelab.bench.stats import Summary

CHUNK = 320  # 20 ms
GAP_S = 2.0
LEAD_S = 0.5
TAIL_S = 3.0
PRE_ROLL = SAMPLE_RATE // 2

SILENCE_ONLY_MS = (200, 300, 400, 500, 700)


def default_policies() -> list[tuple[str, EndOfTurnPolicy]]:
    """Silence-only rules and a grid of Smart Turn policies."""
    rows = [(f"silence {ms}", EndOfTurnPolicy.silence_only(ms)) for ms in SILENCE_ONLY_MS]
    for min_ms in (100, 200, 300, 400):
        for threshold in (0.5, 0.7, 0.9):
            for max_ms in (800, 1200):
                rows.append(
                    (
                        f"smart {min_ms}/{threshold}/{max_ms}",
                        EndOfTurnPolicy(min_ms, threshold, max_ms),
                    )
                )
    for threshold in (0.7, 0.9):
        rows.append(
            (
                f"smart 200/{threshold}/1200 reask 200",
                EndOfTurnPolicy(200, threshold, 1200, reask_ms=200),
            )
        )
    for max_ms in (600, 700):  # the recommended policy with a shorter fallback
        rows.append((f"smart 400/0.9/{max_ms}", EndOfTurnPolicy(400, 0.9, max_ms)))
    for reask in (100, 200):  # the recommended policy, asked again while the silence goes on
        rows.append(
            (f"smart 400/0.9/800 reask {reask}", EndOfTurnPolicy(400, 0.9, 800, reask_ms=reask))
        )
    # A graded wait: "probably finished" ends the turn between the shortest and longest.
    for likely in (0.5, 0.7):
        for likely_ms in (500, 600):
            rows.append(
                (
                    f"smart 400/0.9/800 likely {likely}@{likely_ms}",
                    EndOfTurnPolicy(
                        400, 0.9, 800, likely_threshold=likely, likely_silence_ms=likely_ms
                    ),
                )
            )
    return rows


# -- streams --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """One speaker's utterances joined into a stream, with each utterance's energy span."""

    name: str
    pcm: np.ndarray
    spans: list[tuple[int, int]]  # (start, end) sample of each reference utterance
    ids: list[str]


def stretch_longest_pause(pcm: np.ndarray, target_ms: float) -> np.ndarray:
    """``pcm`` with its longest internal quiet run (≥ 100 ms) repeated up to ``target_ms``.

    Returns ``pcm`` unchanged when no internal pause of 100 ms exists (a single word).
    """
    start, end = energy_bounds(pcm)
    loud = loud_frames(pcm)[start // 160 : end // 160]
    best = (0, 0)
    run_start = None
    for i, is_loud in enumerate([*loud.tolist(), True]):
        if not is_loud and run_start is None:
            run_start = i
        elif is_loud and run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    if (best[1] - best[0]) * 10 < 100:
        return pcm
    a, b = start + best[0] * 160, start + best[1] * 160
    pause = pcm[a:b]
    need = int(target_ms * SAMPLE_RATE / 1000)
    if pause.size >= need:
        return pcm
    tiled = np.resize(pause, need)
    return np.concatenate([pcm[:a], tiled, pcm[b:]])


def speaker_of(utt_id: str) -> str:
    """Group key: the id up to its first underscore ("cards_003" → "cards", "alsa_Rear_Left"
    → "alsa", the LibriVox takes → "librivox")."""
    return utt_id.split("_", 1)[0]


def build_passages(
    manifest: Path, hesitation_ms: float | None = None
) -> tuple[list[Passage], dict[str, str]]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(speaker_of(row["id"]), []).append(row)
    texts = {row["id"]: row["text"] for row in rows}
    passages = []
    for name, members in groups.items():
        parts = [np.zeros(int(LEAD_S * SAMPLE_RATE), dtype=np.int16)]
        spans, ids = [], []
        offset = parts[0].size
        for n, row in enumerate(members):
            pcm = load_audio(manifest.parent / row["audio"])
            if hesitation_ms is not None and len(row["text"].split()) > 1:
                pcm = stretch_longest_pause(pcm, hesitation_ms)
            body = pcm.astype(np.float64)
            fade = min(160, body.size)
            body[:fade] *= np.linspace(0.0, 1.0, fade)
            body[-fade:] *= np.linspace(1.0, 0.0, fade)
            start, end = energy_bounds(pcm)
            spans.append((offset + start, offset + end))
            ids.append(row["id"])
            parts.append(np.rint(body).astype(np.int16))
            offset += pcm.size
            gap = TAIL_S if n == len(members) - 1 else GAP_S
            parts.append(np.zeros(int(gap * SAMPLE_RATE), dtype=np.int16))
            offset += parts[-1].size
        passages.append(Passage(name, np.concatenate(parts), spans, ids))
    return passages, texts


# -- simulation -----------------------------------------------------------------------------


@dataclass
class ModelCache:
    """Smart Turn answers per (passage, turn start, decision sample), with their cost: wall
    time (what this shared machine gave) and process CPU time (what one idle core would)."""

    model: EndOfTurnModel
    answers: dict[tuple[str, int, int], tuple[float, float, float]] = field(default_factory=dict)

    def ask(self, passage: Passage, turn_start: int, now: int) -> tuple[float, float, float]:
        key = (passage.name, turn_start, now)
        if key not in self.answers:
            audio = passage.pcm[max(turn_start, now - MAX_AUDIO_S * SAMPLE_RATE) : now]
            c0, t0 = time.process_time(), time.perf_counter()
            p = self.model.probability(audio)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            self.answers[key] = (p, wall * 1000, cpu * 1000)
        return self.answers[key]


@dataclass
class Decision:
    sample: int  # audio fed when the turn ended
    model_ms: float  # wall time of the model call that decided it (0 for silence)
    model_cpu_ms: float  # its CPU time


def simulate(passage: Passage, policy: EndOfTurnPolicy, cache: ModelCache | None) -> list[Decision]:
    """The turn ends this policy decides over the passage, in order."""
    detector = VadTurnDetector(end_silence_ms=policy.min_silence_ms)
    decisions: list[Decision] = []
    turn_start: int | None = None  # first speech_start of the open turn (minus pre-roll)
    floor = 0
    silence_at: int | None = None  # sample where the pending silence began
    asked: list[float] = []
    probability: float | None = None
    cost = cpu = 0.0
    pcm = passage.pcm
    for offset in range(0, pcm.size, CHUNK):
        fed = min(offset + CHUNK, pcm.size)
        for event in detector.feed(pcm[offset:fed]):
            if event.kind == "speech_start":
                silence_at = None  # the user goes on: same turn
                if turn_start is None:
                    turn_start = max(floor, event.sample - PRE_ROLL)
            else:
                silence_at, asked, probability, cost, cpu = event.sample, [], None, 0.0, 0.0
        if silence_at is None or turn_start is None:
            continue
        silence_ms = (fed - silence_at) * 1000 / SAMPLE_RATE
        points = [p for p in policy.asks_at() if p <= silence_ms and p not in asked]
        if points:
            probability = None  # a (re-)ask is due
        verdict = policy.decide(silence_ms, probability)
        if verdict is Verdict.ASK:
            assert cache is not None, "a policy with a threshold needs a model"
            asked.extend(points)
            # Earlier asks of this silence ran while it went on; only this one delays the end.
            probability, cost, cpu = cache.ask(passage, turn_start, fed)
            verdict = policy.decide(silence_ms, probability)
        if verdict is Verdict.END:
            decisions.append(Decision(fed, cost, cpu))
            turn_start, silence_at, floor = None, None, fed
    return decisions


def score(
    passages: Sequence[Passage], policy: EndOfTurnPolicy, cache: ModelCache | None
) -> dict[str, Any]:
    cut: list[str] = []
    late: list[str] = []
    waits: list[float] = []
    waits_model: list[float] = []
    waits_cpu: list[float] = []
    for passage in passages:
        decisions = simulate(passage, policy, cache)
        for i, (start, end) in enumerate(passage.spans):
            if any(start < d.sample < end for d in decisions):
                cut.append(passage.ids[i])
            horizon = passage.spans[i + 1][0] if i + 1 < len(passage.spans) else passage.pcm.size
            after = [d for d in decisions if end <= d.sample < horizon]
            if not after:
                late.append(passage.ids[i])
                continue
            wait = (after[0].sample - end) * 1000 / SAMPLE_RATE
            waits.append(wait)
            waits_model.append(wait + after[0].model_ms)
            waits_cpu.append(wait + after[0].model_cpu_ms)
    n = sum(len(p.spans) for p in passages)
    return {
        "utterances": n,
        "cut": len(cut),
        "cut_rate": round(len(cut) / n, 3),
        "cut_ids": cut,
        "late": len(late),
        "wait_ms": Summary.of(waits).as_dict(0),
        "wait_incl_model_ms": Summary.of(waits_model).as_dict(0),
        "wait_incl_model_cpu_ms": Summary.of(waits_cpu).as_dict(0),
    }


def run(
    manifest: Path,
    *,
    hesitation_ms: float | None = 700.0,
    policies: Sequence[tuple[str, EndOfTurnPolicy]] | None = None,
    model: EndOfTurnModel | None = None,
) -> dict[str, Any]:
    policies = list(policies) if policies is not None else default_policies()
    if model is None and any(p.uses_model for _, p in policies):
        smart = get_smart_turn()
        smart.warmup()
        model = smart
    sets = {"natural": build_passages(manifest)[0]}
    if hesitation_ms is not None:
        sets[f"hesitation {hesitation_ms:.0f} ms"] = build_passages(manifest, hesitation_ms)[0]
    result: dict[str, Any] = {"sets": {}}
    for set_name, passages in sets.items():
        cache = ModelCache(model) if model is not None else None
        rows = []
        for label, policy in policies:
            rows.append({"policy": label, **score(passages, policy, cache)})
        answers = list(cache.answers.values()) if cache else []
        result["sets"][set_name] = {
            "passages": {p.name: len(p.spans) for p in passages},
            "rows": rows,
            "model_calls": len(answers),
            "model_ms": Summary.of([wall for _, wall, _ in answers]).as_dict(1),
            "model_cpu_ms": Summary.of([cpu for _, _, cpu in answers]).as_dict(1),
        }
    result["loadavg"] = os.getloadavg()
    return result


def print_table(result: dict[str, Any]) -> None:
    for set_name, body in result["sets"].items():
        print(f"\n## {set_name}: {sum(body['passages'].values())} utterances {body['passages']}")
        print(f"model calls {body['model_calls']}: wall ms {body['model_ms']}")
        print(f"  cpu ms {body['model_cpu_ms']}")
        print(
            f"{'policy':30} {'cut':>7} {'late':>4}  wait p50/p95/p99      "
            "+model cpu p50/p95   +model wall p50/p95"
        )
        for row in body["rows"]:
            w, c, m = row["wait_ms"], row["wait_incl_model_cpu_ms"], row["wait_incl_model_ms"]
            print(
                f"{row['policy']:30} {row['cut']:>3}/{row['utterances']:<3} {row['late']:>4}  "
                f"{w['p50']!s:>5} / {w['p95']!s:>5} / {w['p99']!s:>5}   "
                f"{c['p50']!s:>5} / {c['p95']!s:>5}        {m['p50']!s:>5} / {m['p95']!s:>5}"
            )


def plot(result: dict[str, Any], path: Path) -> None:
    """Cut-off rate against median wait, one point per policy, one panel per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = result["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 5), squeeze=False)
    for ax, (set_name, body) in zip(axes[0], sets.items(), strict=True):
        for row in body["rows"]:
            silence = row["policy"].startswith("silence")
            if "/1200" in row["policy"]:
                continue  # same cuts and p50 as the /800 twin; only the p95 differs
            x = row["wait_incl_model_cpu_ms"]["p50"]
            y = 100 * row["cut_rate"]
            if x is None:
                continue
            ax.scatter(x, y, marker="s" if silence else "o", c="tab:red" if silence else "tab:blue")
            ax.annotate(row["policy"].replace("smart ", ""), (x, y), fontsize=7, alpha=0.8)
        ax.set_title(f"{set_name} ({sum(body['passages'].values())} utterances)")
        ax.set_xlabel("wait after end of speech, p50 (ms, + model CPU time)")
        ax.set_ylabel("utterances cut off (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("End of turn: silence only (squares) vs Smart Turn min/threshold/max (dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--plot", type=Path, help="write the trade-off plot here (PNG)")
    parser.add_argument("--hesitation-ms", type=float, default=700.0)
    parser.add_argument("--no-hesitation", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.manifest, hesitation_ms=None if args.no_hesitation else args.hesitation_ms)
    result["command"] = " ".join(["python -m sagelab.bench.endofturn", *sys.argv[1:]])
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
