"""End-of-turn policies on real speech: how often each cuts the user off, and how long it waits.

    python -m sagelab.bench.endofturn --manifest data/speech/manifest.jsonl \\
        [--json out.json] [--plot out.png] [--hesitation-ms 700] [--chunk-ms 20]

Passages. Utterances of one speaker (by id prefix: the LibriVox reader, the card caller, the
alsa announcer, ...) are joined in manifest order into one stream, 2 s of digital silence
between them (as from a client with noise suppression), 0.5 s before the first and 3 s after the
last. Every reference utterance keeps its own pauses: the LibriVox sentences breathe at commas,
the alsa names pause ~350 ms between "front" and "center".

``--hesitation-ms`` adds a second, harder set: in every utterance of two or more words the
longest internal pause is stretched to that length by repeating its own room tone, like
a speaker who stops to think mid-sentence. Both sets are reported.

Each setting (a policy, plus how far ahead of its points the model is asked and how long its
first answer is awaited) streams every passage in ``--chunk-ms`` chunks (20 by default) through
the server's own :class:`TurnTaker`, built as ``LocalAgent`` builds it for audio-sage: a
:class:`VadTurnDetector` (Silero, threshold 0.5) whose own wait is the policy's
``max_silence_ms``, 300 ms of pre-roll, speculation from 100 ms, long turns split after 8 s.
Time is simulated: a chunk arrives when its last sample is recorded; each ``PredictEndOfTurn``
is answered by :class:`SmartTurn` and the answer is given back that call's measured time later,
so ask-ahead, re-asks and the patience limit decide as in the server; each ``Transcribe`` is
answered at once with a dummy text. Every turn end (a ``UserTurn`` that is not a piece of a
split monologue) is a decision. Silero's probabilities are computed once per passage and
replayed to every setting's detector (the same numbers, much faster).

* **cut**: reference utterances with a turn end decided strictly inside them (between their
  energy start and energy end): the agent would have started answering mid-sentence.
* **wait**: from the utterance's energy end to the first turn end after it, in ms. A setting
  with a model is run three times: the model answering at once (``wait``: the policy's wait
  in audio alone), after each call's measured CPU time (``+model cpu``: an idle core) and after
  its wall time (``+model wall``: this machine as it was). **cut** and **late** are those of
  the CPU run; the JSON has each run's own.
* **late**: utterances whose turn did not end before the next utterance began (2 s later).

Model calls are cached per (passage, audio start, audio end): settings that ask about the same
audio share them. The machine may be shared: the model's wall and CPU time p50/p95/p99 and the
load average are reported with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from sagelab.agents.local.endofturn import (
    MAX_AUDIO_S,
    EndOfTurnModel,
    EndOfTurnPolicy,
    get_smart_turn,
)
from sagelab.agents.local.vad import WINDOW_SAMPLES, SileroVad, VadTurnDetector
from sagelab.audio import SAMPLE_RATE, load_audio
from sagelab.audio.activity import energy_bounds, loud_frames
from sagelab.bench.stats import Summary
from sagelab.conversation.turns import (
    CancelEndOfTurn,
    PredictEndOfTurn,
    Transcribe,
    TurnAction,
    TurnTaker,
    UserTurn,
)

CHUNK_MS = 20
GAP_S = 2.0
LEAD_S = 0.5
TAIL_S = 3.0
# The turn-taker as ``LocalAgent`` builds it for audio-sage (its defaults and agents.yaml).
PREROLL_MS = 300
SPECULATE_AFTER_MS = 100
SPLIT_AFTER_S = 8.0

SILENCE_ONLY_MS = (200, 300, 400, 450, 500, 700)
DEPLOYED_POLICY = EndOfTurnPolicy(400, 0.9, 800, reask_ms=200)
DEPLOYED_AHEAD_MS = 200.0
DEPLOYED_PATIENCE_MS = 100.0
"""audio-sage's policy, ask-ahead and patience (``src/sagelab/assets/agents.yaml``)."""


def deployed(policy: EndOfTurnPolicy) -> Setting:
    """``policy`` asked as audio-sage asks its own: 200 ms ahead, 100 ms of patience."""
    return Setting(policy, ask_ahead_ms=DEPLOYED_AHEAD_MS, model_patience_ms=DEPLOYED_PATIENCE_MS)


def default_policies() -> list[Setting]:
    """Silence-only rules, a grid of Smart Turn policies asked at their own points, and the
    deployed policy (asked 200 ms ahead, 100 ms of patience) with its variants."""
    rows = [Setting(EndOfTurnPolicy.silence_only(400), detector_only=True)]  # today's VAD rule
    rows += [Setting(EndOfTurnPolicy.silence_only(ms)) for ms in SILENCE_ONLY_MS]
    for min_ms in (100, 200, 300, 400):
        for threshold in (0.5, 0.7, 0.9):
            for max_ms in (800, 1200):
                rows.append(Setting(EndOfTurnPolicy(min_ms, threshold, max_ms)))
    for threshold in (0.7, 0.9):
        rows.append(Setting(EndOfTurnPolicy(200, threshold, 1200, reask_ms=200)))
    for max_ms in (600, 700):  # a shorter fallback
        rows.append(Setting(EndOfTurnPolicy(400, 0.9, max_ms)))
    for reask in (100, 200):  # asked again while the silence goes on
        rows.append(Setting(EndOfTurnPolicy(400, 0.9, 800, reask_ms=reask)))
    # A graded wait: "probably finished" ends the turn between the shortest and longest.
    for likely in (0.5, 0.7):
        for likely_ms in (500, 600):
            policy = EndOfTurnPolicy(
                400, 0.9, 800, likely_threshold=likely, likely_silence_ms=likely_ms
            )
            rows.append(Setting(policy))
    # The deployed policy as the server runs it, and what each of its knobs buys.
    rows.append(Setting(EndOfTurnPolicy(400, 0.9, 800), model_patience_ms=100))  # no ask-ahead
    for max_ms in (800, 700):
        for again in (None, 200.0, 100.0):
            policy = EndOfTurnPolicy(400, 0.9, max_ms, reask_ms=again)
            rows.append(deployed(policy))
    for max_ms in (450, 500, 550, 600):  # the fallback is the p95: how short can it be?
        rows.append(deployed(EndOfTurnPolicy(400, 0.9, max_ms)))
    rows.append(deployed(EndOfTurnPolicy(400, 0.9, 500, reask_ms=100)))
    for max_ms in (600, 800):
        rows.append(deployed(EndOfTurnPolicy(300, 0.9, max_ms)))
    for threshold in (0.7, 0.8):
        rows.append(deployed(EndOfTurnPolicy(400, threshold, 800)))
    rows.append(Setting(EndOfTurnPolicy(400, 0.9, 800), ask_ahead_ms=100, model_patience_ms=100))
    policy = EndOfTurnPolicy(400, 0.9, 800, likely_threshold=0.7, likely_silence_ms=600)
    rows.append(deployed(policy))
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


class ReplayVad:
    """Silero's probabilities for one passage, computed once and replayed to each detector.

    Every setting streams the same audio through a fresh :class:`VadTurnDetector`, whose
    decisions depend only on these probabilities (one per 512-sample window, whatever the
    chunk size); computing them once per passage instead of once per setting and model time
    is what keeps the grid in minutes. The detector, its hysteresis and its waits are real.
    """

    def __init__(self, probabilities: np.ndarray) -> None:
        self.script = np.asarray(probabilities, dtype=np.float32)
        self.at = 0

    def reset(self) -> None:
        self.at = 0

    def probabilities(self, pcm: np.ndarray) -> np.ndarray:
        n = pcm.size // WINDOW_SAMPLES
        if self.at + n > self.script.size:
            raise ValueError("fed more audio than the replayed probabilities cover")
        out = self.script[self.at : self.at + n]
        self.at += n
        return out


def speech_probabilities(pcm: np.ndarray) -> np.ndarray:
    """Silero's probability for every whole 512-sample window of ``pcm``, in one stream."""
    whole = pcm.size - pcm.size % WINDOW_SAMPLES
    return SileroVad().probabilities(pcm[:whole])


@dataclass(frozen=True)
class Setting:
    """An end-of-turn policy as :class:`TurnTaker` applies it: the policy, plus how far ahead
    of its points the model is asked and how long its first answer is awaited."""

    policy: EndOfTurnPolicy
    ask_ahead_ms: float = 0.0
    model_patience_ms: float | None = None
    detector_only: bool = False
    """No policy in the turn-taker: the detector's own wait (``max_silence_ms``, rounded up to
    whole 32 ms windows) ends turns, as for an agent without ``end_of_turn``. "silence N" is
    the agents file's ``{silence_only: N}``, which the turn-taker ends at N ms exactly."""

    def __post_init__(self) -> None:
        if self.detector_only and self.policy.uses_model:
            raise ValueError("detector_only is for a silence rule; this policy asks a model")

    @property
    def label(self) -> str:
        p = self.policy
        if self.detector_only:
            return f"vad {p.max_silence_ms:g}"
        if not p.uses_model:
            return f"silence {p.max_silence_ms:g}"
        label = f"smart {p.min_silence_ms:g}/{p.threshold:g}/{p.max_silence_ms:g}"
        if p.likely_threshold is not None:
            label += f" likely {p.likely_threshold:g}@{p.likely_silence_ms:g}"
        if p.reask_ms is not None:
            label += f" reask {p.reask_ms:g}"
        if self.ask_ahead_ms:
            label += f" ahead {self.ask_ahead_ms:g}"
        if self.model_patience_ms is not None:
            label += f" patience {self.model_patience_ms:g}"
        return label


@dataclass
class ModelCache:
    """Smart Turn answers per (passage, audio start, audio end), with their cost: wall
    time (what this shared machine gave) and process CPU time (what one idle core would)."""

    model: EndOfTurnModel
    answers: dict[tuple[str, int, int], tuple[float, float, float]] = field(default_factory=dict)

    def ask(self, passage: str, start: int, end: int, audio: np.ndarray) -> tuple[float, ...]:
        """(probability, wall ms, CPU ms) for the turn's audio ``[start, end)``."""
        key = (passage, start, end)
        if key not in self.answers:
            audio = audio[-MAX_AUDIO_S * SAMPLE_RATE :]  # all the model reads
            c0, t0 = time.process_time(), time.perf_counter()
            p = self.model.probability(audio)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            self.answers[key] = (p, wall * 1000, cpu * 1000)
        return self.answers[key]


ModelTime = Literal["none", "cpu", "wall"] | float
"""How long the simulated model takes to answer: nothing, the call's measured CPU time, its
measured wall time, or a fixed number of ms (for what-ifs and tests)."""


def _delay_ms(model_time: ModelTime, cpu_ms: float, wall_ms: float) -> float:
    if model_time == "none":
        return 0.0
    if model_time == "cpu":
        return cpu_ms
    if model_time == "wall":
        return wall_ms
    if isinstance(model_time, str) or not model_time >= 0:
        raise ValueError(f"model_time must be none, cpu, wall or ms >= 0, got {model_time!r}")
    return float(model_time)


@dataclass
class Decision:
    sample: int  # where the turn ended on the audio's clock (the time the agent knew)
    eot_model_ms: float | None  # ask-to-answer time of the model call that ended it, if one did


def simulate(
    passage: Passage,
    setting: Setting | EndOfTurnPolicy,
    cache: ModelCache | None,
    *,
    probabilities: np.ndarray | None = None,
    chunk_ms: float = CHUNK_MS,
    model_time: ModelTime = "cpu",
) -> list[Decision]:
    """The turn ends the server's :class:`TurnTaker` decides over ``passage``, in order.

    Simulated time: a chunk arrives when its last sample is recorded. Each
    ``PredictEndOfTurn`` is answered by the cached model; the answer goes back to the
    turn-taker ``model_time`` later (before the next chunk it would have beaten), so ask-ahead,
    re-asks and the patience limit play out as in the server. Each ``Transcribe`` is answered
    at once with a dummy text: speech-to-text time is not the question here. A ``UserTurn``
    that ends a turn (not a piece split from a long one) is a decision, at the time it came.
    """
    if isinstance(setting, EndOfTurnPolicy):
        setting = Setting(setting)
    policy = setting.policy
    if policy.uses_model and cache is None:
        raise ValueError(f"{setting.label}: a policy with a threshold needs a model")
    probs = probabilities if probabilities is not None else speech_probabilities(passage.pcm)
    detector = VadTurnDetector(
        end_silence_ms=policy.max_silence_ms, vad=cast(SileroVad, ReplayVad(probs))
    )
    taker = TurnTaker(
        detector,
        preroll_ms=PREROLL_MS,
        speculate_after_ms=SPECULATE_AFTER_MS,
        split_after_s=SPLIT_AFTER_S,
        end_of_turn=None if setting.detector_only else policy,
        ask_ahead_ms=setting.ask_ahead_ms,
        model_patience_ms=setting.model_patience_ms,
    )
    pending: dict[int, tuple[float, float]] = {}  # job -> (answer time s, probability)
    decisions: list[Decision] = []

    def handle(actions: list[TurnAction], now: float) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, PredictEndOfTurn):
                assert cache is not None
                p, wall, cpu = cache.ask(passage.name, action.start, action.end, action.audio)
                delay = _delay_ms(model_time, cpu, wall)
                pending[action.job] = (now + delay / 1000, p)
            elif isinstance(action, CancelEndOfTurn):
                pending.pop(action.job, None)
            elif isinstance(action, Transcribe):
                queue.extend(taker.transcribed(action.job, "words", 0.0, now))
            elif isinstance(action, UserTurn) and action.endpointing_ms is not None:
                decisions.append(Decision(round(now * SAMPLE_RATE), action.eot_model_ms))
        deliver(now)

    def deliver(until: float) -> None:
        """Give the turn-taker every answer that has arrived by ``until``, in arrival order."""
        while pending:
            job, (at, p) = min(pending.items(), key=lambda item: item[1][0])
            if at > until:
                return
            del pending[job]
            handle(taker.end_of_turn(job, p, at), at)

    chunk = max(1, round(chunk_ms * SAMPLE_RATE / 1000))
    pcm = passage.pcm
    for offset in range(0, pcm.size, chunk):
        fed = min(offset + chunk, pcm.size)
        now = fed / SAMPLE_RATE
        deliver(now)  # answers that came while this chunk was being recorded
        handle(taker.audio(pcm[offset:fed], now), now)
    deliver(float("inf"))
    return decisions


MODEL_TIMES: tuple[ModelTime, ...] = ("none", "cpu", "wall")
PRIMARY: ModelTime = "cpu"  # the cut and late counts reported are those of this run


def _tally(passages: Sequence[Passage], runs: Sequence[list[Decision]]) -> dict[str, Any]:
    cut: list[str] = []
    late: list[str] = []
    waits: list[float] = []
    for passage, decisions in zip(passages, runs, strict=True):
        for i, (start, end) in enumerate(passage.spans):
            if any(start < d.sample < end for d in decisions):
                cut.append(passage.ids[i])
            horizon = passage.spans[i + 1][0] if i + 1 < len(passage.spans) else passage.pcm.size
            after = [d for d in decisions if end <= d.sample < horizon]
            if not after:
                late.append(passage.ids[i])
                continue
            waits.append((after[0].sample - end) * 1000 / SAMPLE_RATE)
    return {"cut": len(cut), "cut_ids": cut, "late": len(late), "waits": waits}


def score(
    passages: Sequence[Passage],
    setting: Setting | EndOfTurnPolicy,
    cache: ModelCache | None,
    *,
    probabilities: dict[str, np.ndarray] | None = None,
    chunk_ms: float = CHUNK_MS,
) -> dict[str, Any]:
    """Cuts, late turns and waits of one setting over ``passages``.

    A setting with a model is simulated three times: with a model that answers at once
    (``wait_ms``: the wait in ms of audio alone), after each call's measured CPU time
    (``wait_incl_model_cpu_ms``: an idle core) and after its wall time
    (``wait_incl_model_ms``: this machine as it was). ``cut``/``late`` are those of the CPU
    run; ``by_model_time`` has each run's own.
    """
    if isinstance(setting, EndOfTurnPolicy):
        setting = Setting(setting)
    times = MODEL_TIMES if setting.policy.uses_model else ("none",)
    tallies: dict[str, dict[str, Any]] = {}
    for model_time in times:
        runs = [
            simulate(
                p,
                setting,
                cache,
                probabilities=None if probabilities is None else probabilities[p.name],
                chunk_ms=chunk_ms,
                model_time=model_time,
            )
            for p in passages
        ]
        tallies[str(model_time)] = _tally(passages, runs)
    tally = {str(t): tallies.get(str(t), tallies["none"]) for t in MODEL_TIMES}
    primary = tally[str(PRIMARY)]
    n = sum(len(p.spans) for p in passages)
    return {
        "utterances": n,
        "cut": primary["cut"],
        "cut_rate": round(primary["cut"] / n, 3),
        "cut_ids": primary["cut_ids"],
        "late": primary["late"],
        "wait_ms": Summary.of(tally["none"]["waits"]).as_dict(0),
        "wait_incl_model_ms": Summary.of(tally["wall"]["waits"]).as_dict(0),
        "wait_incl_model_cpu_ms": Summary.of(tally["cpu"]["waits"]).as_dict(0),
        "by_model_time": {
            t: {"cut": v["cut"], "cut_ids": v["cut_ids"], "late": v["late"]}
            for t, v in tally.items()
        },
    }


def run(
    manifest: Path,
    *,
    hesitation_ms: float | None = 700.0,
    policies: Sequence[Setting | tuple[str, EndOfTurnPolicy]] | None = None,
    model: EndOfTurnModel | None = None,
    chunk_ms: float = CHUNK_MS,
) -> dict[str, Any]:
    """Score every setting on the natural passages and, with ``hesitation_ms``, the
    stretched ones. A ``(label, policy)`` pair is the policy asked at its own points."""
    settings = [
        p if isinstance(p, Setting) else Setting(p[1])
        for p in (policies if policies is not None else default_policies())
    ]
    if model is None and any(s.policy.uses_model for s in settings):
        smart = get_smart_turn()
        smart.warmup()
        model = smart
    sets = {"natural": build_passages(manifest)[0]}
    if hesitation_ms is not None:
        sets[f"hesitation {hesitation_ms:.0f} ms"] = build_passages(manifest, hesitation_ms)[0]
    result: dict[str, Any] = {"chunk_ms": chunk_ms, "sets": {}}
    for set_name, passages in sets.items():
        probabilities = {p.name: speech_probabilities(p.pcm) for p in passages}
        cache = ModelCache(model) if model is not None else None
        rows = []
        for setting in settings:
            scored = score(passages, setting, cache, probabilities=probabilities, chunk_ms=chunk_ms)
            rows.append({"policy": setting.label, **scored})
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
    print(f"chunks of {result.get('chunk_ms', CHUNK_MS):g} ms; load average {result['loadavg']}")
    for set_name, body in result["sets"].items():
        print(f"\n## {set_name}: {sum(body['passages'].values())} utterances {body['passages']}")
        print(f"model calls {body['model_calls']}: wall ms {body['model_ms']}")
        print(f"  cpu ms {body['model_cpu_ms']}")
        print(
            f"{'policy':46} {'cut':>7} {'late':>4}  model answers: at once p50/p95/p99"
            "   after its CPU p50/p95/p99   after its wall: cut, p50/p95"
        )
        for row in body["rows"]:
            w, c, m = row["wait_ms"], row["wait_incl_model_cpu_ms"], row["wait_incl_model_ms"]
            wall_cut = row["by_model_time"]["wall"]["cut"]
            print(
                f"{row['policy']:46} {row['cut']:>3}/{row['utterances']:<3} {row['late']:>4}  "
                f"{w['p50']!s:>5} / {w['p95']!s:>5} / {w['p99']!s:>5}      "
                f"{c['p50']!s:>5} / {c['p95']!s:>5} / {c['p99']!s:>5}      "
                f"{wall_cut:>2}, {m['p50']!s:>5} / {m['p95']!s:>5}"
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
            silence = row["policy"].startswith(("silence", "vad"))
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
    parser.add_argument(
        "--chunk-ms", type=float, default=CHUNK_MS, help="client chunk size (default 20)"
    )
    args = parser.parse_args(argv)
    if not args.chunk_ms > 0:
        parser.error(f"--chunk-ms must be positive, got {args.chunk_ms}")
    result = run(
        args.manifest,
        hesitation_ms=None if args.no_hesitation else args.hesitation_ms,
        chunk_ms=args.chunk_ms,
    )
    result["command"] = " ".join(["python -m sagelab.bench.endofturn", *sys.argv[1:]])
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
