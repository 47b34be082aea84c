"""What a scenario file may say: steps the simulated user takes and what the agent must do.

A scenario is one conversation with one agent. Its steps run in order; every step that talks to
the agent (``play``, ``say``, ``send_text``, ``barge_in``) is one *user turn*, and its
``expect`` block is checked against what the agent did in answer to that turn::

    name: demo-conversation
    agent: audio-sage
    steps:
      - play: ../demo/user/01_search.wav         # a recording, streamed in real time
        transcript: Search for customers in Oslo.  # what is said in it (for max_wer)
        expect:
          max_wer: 0.25
          tools: [{name: search_records, parameters: {query: oslo}}]
          reply_contains: Anna Berg
          within_ms: {voice_to_voice: 2000}
      - say: Tell me about record five.           # synthesised with Piper, then streamed
      - send_text: What can you do?               # a typed user_message
      - wait_ms: 500
      - barge_in: {after_ms: 1200, play: ../demo/user/05_barge.wav}
        expect: {interrupted: true}

The models are strict (unknown keys are errors) so a typo in a scenario fails loudly instead
of silently checking nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Budgets ``within_ms`` may name: client-measured latencies and the server's stage timings.
CLIENT_METRICS = ("voice_to_voice", "interruption")
STAGE_METRICS = ("endpointing", "stt", "stt_compute", "brain", "tool", "tts_first_audio")
BUDGET_METRICS = CLIENT_METRICS + STAGE_METRICS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolExpectation(_Strict):
    """A tool the agent must call during the turn. ``parameters`` is a subset match: every
    key given must be present with that value (strings compared case-insensitively, since
    they often come from speech); keys not given are not checked."""

    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None
    error: bool | None = Field(
        default=None, description="true: the call must fail; false: it must succeed"
    )


def _tool_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Expect(_Strict):
    """Checks on one user turn. Every field is optional; absent means "not checked"."""

    max_wer: float | None = Field(default=None, ge=0.0, le=1.0)
    tools: list[ToolExpectation] | None = Field(
        default=None, description="tools that must be called; [] means no tool may be called"
    )
    reply_contains: list[str] = Field(default_factory=list)
    reply_not_contains: list[str] = Field(default_factory=list)
    interrupted: bool | None = None
    replies: int | None = Field(
        default=None, ge=0, description="how many replies the agent gives to the turn"
    )
    within_ms: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``tool: name`` for one tool, and a single string where a list of strings fits."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "tool" in data:
            if "tools" in data:
                raise ValueError("give either 'tool' or 'tools', not both")
            data["tools"] = [data.pop("tool")]
        if isinstance(data.get("tools"), list):
            data["tools"] = [_tool_shorthand(t) for t in data["tools"]]
        for key in ("reply_contains", "reply_not_contains"):
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        return data

    @field_validator("within_ms")
    @classmethod
    def _known_budgets(cls, budgets: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(budgets) - set(BUDGET_METRICS))
        if unknown:
            raise ValueError(
                f"unknown budget {', '.join(unknown)}; "
                f"within_ms may name {', '.join(BUDGET_METRICS)}"
            )
        for name, ms in budgets.items():
            if ms <= 0:
                raise ValueError(f"budget {name} must be a positive number of ms, got {ms}")
        return budgets

    @property
    def empty(self) -> bool:
        return self == Expect()


class _Turn(_Strict):
    name: str | None = None
    expect: Expect = Field(default_factory=Expect)
    wait_reply: bool = Field(
        default=True,
        description="wait for the agent's reply and for it to finish speaking before going on",
    )


class PlayStep(_Turn):
    """Stream a recording (any audio file; paths are relative to the scenario file), or
    several back to back with ``gap_ms`` of silence between them: a long monologue made of
    sentences, with pauses shorter than the agent's end-of-turn silence."""

    kind: Literal["play"] = "play"
    play: list[Path] = Field(min_length=1)
    gap_ms: int = Field(default=250, ge=0, le=10_000)
    trim: bool = Field(
        default=False,
        description="cut each recording's leading and trailing room tone, so the pauses "
        "between recordings are exactly gap_ms",
    )
    transcript: str | None = Field(default=None, description="what is said, for max_wer")

    @field_validator("play", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @property
    def reference(self) -> str | None:
        return self.transcript

    @property
    def label(self) -> str:
        more = f" + {len(self.play) - 1} more" if len(self.play) > 1 else ""
        return self.name or f"play {self.play[0].name}{more}"


class SayStep(_Turn):
    """Synthesise a line with the local Piper TTS and stream it as the user's speech."""

    kind: Literal["say"] = "say"
    say: str = Field(min_length=1)

    @property
    def reference(self) -> str | None:
        return self.say

    @property
    def label(self) -> str:
        return self.name or f'say "{self.say}"'


class TextStep(_Turn):
    """A typed user turn (``user_message``)."""

    kind: Literal["send_text"] = "send_text"
    send_text: str = Field(min_length=1)

    @property
    def reference(self) -> str | None:
        return None

    @property
    def label(self) -> str:
        return self.name or f'text "{self.send_text}"'


class WaitStep(_Strict):
    """Pause before the next step; nothing is sent meanwhile (the agent may go on talking)."""

    kind: Literal["wait"] = "wait"
    wait_ms: int = Field(gt=0, le=600_000)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"wait {self.wait_ms} ms"


class BargeIn(_Strict):
    """Talk over the agent ``after_ms`` after its previous reply started to play."""

    after_ms: int = Field(ge=0, le=60_000)
    play: Path | None = None
    say: str | None = None
    transcript: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BargeIn:
        if (self.play is None) == (self.say is None):
            raise ValueError("barge_in needs exactly one of 'play' (a recording) or 'say' (a line)")
        return self


class BargeInStep(_Turn):
    kind: Literal["barge_in"] = "barge_in"
    barge_in: BargeIn

    @property
    def reference(self) -> str | None:
        return self.barge_in.transcript or self.barge_in.say

    @property
    def label(self) -> str:
        what = self.barge_in.play.name if self.barge_in.play else f'"{self.barge_in.say}"'
        return self.name or f"barge in after {self.barge_in.after_ms} ms: {what}"


Step = Annotated[
    PlayStep | SayStep | TextStep | WaitStep | BargeInStep, Field(discriminator="kind")
]
TurnStep = PlayStep | SayStep | TextStep | BargeInStep
STEP_KEYS = {"play": "play", "say": "say", "send_text": "send_text", "wait_ms": "wait"}


class ClientTool(_Strict):
    """How the simulated client answers a client tool call: a result, or a failure."""

    result: Any = None
    error: str | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> ClientTool:
        if self.result is not None and self.error is not None:
            raise ValueError("a client tool gives either 'result' or 'error', not both")
        return self


class Settings(_Strict):
    trailing_silence_ms: int = Field(
        default=1000, ge=0, le=10_000, description="silence streamed after each utterance"
    )
    reply_timeout_s: float = Field(default=30.0, gt=0, le=600)
    greeting: Literal["wait", "talk_over", "none"] = Field(
        default="wait",
        description="the agent's first message: 'wait' until it has played out, 'talk_over' "
        "(start the first step as soon as its text arrives), or 'none' (the agent has none: "
        "start at once; otherwise its absence costs a 10 s wait)",
    )
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    agent_quiet_ms: int = Field(
        default=1000,
        ge=100,
        le=10_000,
        description="how long the agent's audio must have stopped before the user takes the "
        "next turn; the protocol has no end-of-reply event, and a reply synthesised sentence "
        "by sentence can pause between sentences on a loaded machine",
    )


class Scenario(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    agent: str = Field(min_length=1)
    client_tools: dict[str, ClientTool] = Field(default_factory=dict)
    settings: Settings = Field(default_factory=Settings)
    steps: list[Step] = Field(min_length=1)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _tag_steps(cls, data: Any) -> Any:
        """Steps are written by their action key (``play: …``); give each its ``kind``."""
        if isinstance(data, dict) and isinstance(data.get("steps"), list):
            data = {**data, "steps": [_tag(s) for s in data["steps"]]}
        return data

    @property
    def turns(self) -> list[tuple[int, TurnStep]]:
        """(index in ``steps``, step) of every step that is a user turn."""
        return [(i, s) for i, s in enumerate(self.steps) if not isinstance(s, WaitStep)]


def _tag(step: Any) -> Any:
    if not isinstance(step, dict) or "kind" in step:
        return step
    if "barge_in" in step:
        return {**step, "kind": "barge_in"}
    kinds = [kind for key, kind in STEP_KEYS.items() if key in step]
    if len(kinds) == 1:
        return {**step, "kind": kinds[0]}
    return step  # the loader explains what is missing or ambiguous
