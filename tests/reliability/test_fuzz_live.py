"""Fuzzing the live server over real sockets: random and mutated frames on both protocols.

Each example is one session: the initiation, a few hostile frames, then a sentinel frame whose
answer proves the receive loop processed everything before it and is still serving. Whatever
happens, the server must not crash, every rejection must be explained (an ``error`` event with
a type and a message, then a documented close code), and a witness session running the whole
time must never notice.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from sagelab.config import ServerConfig
from sagelab.protocol import closecodes
from sagelab.server.app import BackgroundServer, SagelabServer

INIT = json.dumps({"type": "conversation_initiation_client_data"})
FRAME_LIMIT = 4096
# What a rejection may close with: 1000 only for a relay "end", which the client asked for.
EXPLAINED_CLOSES = {closecodes.NORMAL, closecodes.INVALID_INPUT, closecodes.TOO_BIG}
_counter = itertools.count()


# ------------------------------------------------------------------------------ strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
pcm = st.binary(max_size=640).map(lambda b: base64.b64encode(b).decode())

CONVAI_TEMPLATES = [
    st.fixed_dictionaries({"user_audio_chunk": pcm}),
    st.fixed_dictionaries({"type": st.just("pong"), "event_id": st.integers(-5, 10**6)}),
    st.fixed_dictionaries({"type": st.just("user_message"), "text": st.text(max_size=40)}),
    st.fixed_dictionaries({"type": st.just("contextual_update"), "text": st.text(max_size=40)}),
    st.fixed_dictionaries({"type": st.just("user_activity")}),
    st.fixed_dictionaries(
        {
            "type": st.just("client_tool_result"),
            "tool_call_id": st.text(max_size=12),
            "result": json_values,
            "is_error": st.booleans(),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("feedback"),
            "score": st.sampled_from(["like", "dislike", "meh"]),
            "event_id": st.integers(-5, 100),
        }
    ),
    st.just(json.loads(INIT)),
]
RELAY_TEMPLATES = [
    st.fixed_dictionaries({"type": st.just("audio"), "data": pcm}),
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)}),
    st.fixed_dictionaries({"type": st.just("interrupt")}),
    st.fixed_dictionaries({"type": st.just("end")}),
]


@st.composite
def mutated(draw: st.DrawFn, templates: list[st.SearchStrategy[dict[str, Any]]]) -> str | bytes:
    """A valid message, then maybe broken: a key dropped or retyped, junk added, text edited."""
    msg = dict(draw(st.one_of(templates)))
    how = draw(
        st.sampled_from(["none", "none", "none", "drop", "retype", "add", "edit", "truncate"])
    )
    if how == "drop" and msg:
        msg.pop(draw(st.sampled_from(sorted(msg))))
    elif how == "retype" and msg:
        msg[draw(st.sampled_from(sorted(msg)))] = draw(json_values)
    elif how == "add":
        msg[draw(st.text(max_size=10))] = draw(json_values)
    text = json.dumps(msg)
    if how == "edit" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.characters()) + text[i + 1 :]
    elif how == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


def frames(templates: list[st.SearchStrategy[dict[str, Any]]]) -> st.SearchStrategy[list[Any]]:
    valid_or_mutated = mutated(templates)
    junk = st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60),
        st.integers(FRAME_LIMIT + 1, 3 * FRAME_LIMIT).map(lambda n: "x" * n),  # oversized
    )
    # Most frames look like real ones, so sessions live long enough to reach deep paths.
    one = st.one_of(valid_or_mutated, valid_or_mutated, valid_or_mutated, valid_or_mutated, junk)
    return st.lists(one, min_size=1, max_size=4)


# --------------------------------------------------------------------------------- harness


class Witness:
    """A session that runs through the whole fuzz run, asking the server a question every
    0.2 s and checking each answer comes; a failure here means fuzzing hurt someone else."""

    def __init__(self, url: str) -> None:
        self.ws = connect(url, open_timeout=5)
        self.ws.send(INIT)
        assert json.loads(self.ws.recv(timeout=5))["type"] == "conversation_initiation_metadata"
        self.answered = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                _ask_sentinel(self.ws, f"witness-{self.answered}")
                self.answered += 1
            except Exception as exc:  # any failure is the finding
                self.failures.append(repr(exc))
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.ws.close()


def _sentinel_frame(protocol: str, tag: str) -> str:
    if protocol == "convai":
        return json.dumps({"type": "client_tool_result", "tool_call_id": tag, "result": "x"})
    return json.dumps({"type": tag})


def _ask_sentinel(
    ws: ClientConnection, tag: str, protocol: str = "convai", seen: list[dict] | None = None
) -> list[dict]:
    """Send the sentinel and read until its error comes back; every message read goes into
    ``seen`` (kept when the server closes halfway)."""
    seen = [] if seen is None else seen
    ws.send(_sentinel_frame(protocol, tag))
    while True:
        msg = json.loads(ws.recv(timeout=5))
        seen.append(msg)
        if msg["type"] == "error" and tag in json.dumps(msg):
            return seen


def _errors(protocol: str, messages: list[dict]) -> list[tuple[int | None, str, str]]:
    out = []
    for m in messages:
        if m["type"] != "error":
            continue
        if protocol == "convai":
            e = m["error_event"]
            out.append((e.get("code"), e.get("error_type") or "", e.get("message") or ""))
        else:
            out.append((None, "error", m["data"].get("message") or ""))
    return out


def _session(url: str, protocol: str, hostile: list[Any]) -> None:
    tag = f"sentinel-{next(_counter)}"
    with connect(url, open_timeout=5, max_size=None) as ws:
        if protocol == "convai":
            ws.send(INIT)
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] in ("conversation_initiation_metadata", "ready")
        messages: list[dict] = []
        with contextlib.suppress(ConnectionClosed):
            for frame in hostile:
                ws.send(frame)
            _ask_sentinel(ws, tag, protocol, messages)
            for e in _errors(protocol, messages):
                assert e[2], f"an error event without a message: {e}"
            event("served on")
            return  # still serving after everything before the sentinel
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                messages.append(json.loads(ws.recv(timeout=5)))
        code = ws.close_code
        errors = _errors(protocol, messages)
        event(f"closed {code} {errors[-1][1] if errors else ''}".strip())
        assert code in EXPLAINED_CLOSES, (code, ws.close_reason, hostile)
        assert ws.close_reason, f"close {code} without a reason"
        if code == closecodes.NORMAL:
            assert protocol == "relay" and any(m["type"] == "complete" for m in messages)
            return
        assert errors, f"closed {code} with no error event before it: {hostile}"
        assert all(message for _, _, message in errors)
        if protocol == "convai":
            assert errors[-1][0] == code and errors[-1][1]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SagelabServer]:
    from sagelab.config import load_config

    tmp = tmp_path_factory.mktemp("fuzz")
    config: ServerConfig = load_config(
        None, env={}, port=0, store_path=str(tmp / "store.sqlite3"), ping_interval_s=0.5
    )
    config.agents = [a for a in config.agents if a.id == "scripted"]
    config.max_frame_bytes = FRAME_LIMIT
    config.max_sessions = 200
    with BackgroundServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def witness(fuzz_server: SagelabServer) -> Iterator[Witness]:
    w = Witness(f"{fuzz_server.ws_url}/v1/convai/conversation?agent_id=scripted")
    yield w
    w.stop()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@FUZZ
@given(hostile=frames(CONVAI_TEMPLATES))
def test_convai_route_survives_and_explains(fuzz_server, witness, hostile):
    _session(f"{fuzz_server.ws_url}/v1/convai/conversation?agent_id=scripted", "convai", hostile)


@FUZZ
@given(hostile=frames(RELAY_TEMPLATES))
def test_relay_route_survives_and_explains(fuzz_server, witness, hostile):
    _session(f"{fuzz_server.ws_url}/voice-conversation?conversationDetailId=fuzz", "relay", hostile)


def test_after_fuzzing_only_the_witness_is_left_and_nothing_crashed(fuzz_server, witness):
    """Runs last in this module: the server's own view after both fuzz runs."""
    import time

    deadline = time.monotonic() + 10
    while fuzz_server.registry.active > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuzz_server.registry.active == 1  # the witness
    assert not witness.failures, witness.failures
    assert witness.answered >= 3
    metrics = fuzz_server.metrics.render().decode()
    assert "unknown_websocket_crash" not in metrics and 'error_type="internal_error"' not in metrics
    fuzz_server.store.flush()
    assert len(fuzz_server.store.open_conversations()) == 1
