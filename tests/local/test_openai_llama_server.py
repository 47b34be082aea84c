"""The ``openai`` brain against a real OpenAI-compatible server: llama-cpp-python's, started
here with the same SmolLM2 GGUF the ``llm`` brain uses. Streaming and tool calls go over real
HTTP and SSE as they would to Ollama, vLLM or OpenAI (the scripted fake in ``openai_server``
stays for the error paths a real server will not produce on demand)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import ChatMessage, create_brain
from sagelab.bench.serverproc import free_port
from sagelab.client import Session
from sagelab.config import load_config
from sagelab.metrics.accuracy import normalize
from sagelab.server.app import SagelabServer

pytest.importorskip("llama_cpp.server.app")
pytestmark = pytest.mark.model

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on a free port; its base URL (…/v1)."""
    from sagelab.agents.local.brains.llm_model import bundled_model_path

    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(bundled_model_path()), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2",
        # Tool calls for a model without a tool-call template: llama.cpp constrains the
        # output with a grammar between a message and a call of one of the offered functions.
        "--chat_format", "chatml-function-calling",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError), urllib.request.urlopen(base + "/models", timeout=1):
                break
            assert time.monotonic() < deadline, "llama.cpp server did not start in 90 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


UPDATE = {
    "name": "update_record",
    "type": "server",
    "description": "Change one field of a customer account: its status, owner, city or notes.",
    "parameters": {
        "type": "object",
        "required": ["record_id", "field", "value"],
        "properties": {
            "record_id": {"type": "integer", "description": "The account's id."},
            "field": {"type": "string", "enum": ["status", "owner", "city", "notes"]},
            "value": {"type": "string", "description": "The new value."},
        },
    },
}
# Offered tools freely ("auto"), SmolLM2-135M behind chatml-function-calling always answers in
# text; asked for update_record it writes schema-shaped arguments (llama.cpp's grammar).
FORCE = {"tool_choice": "update_record"}


def openai_options(base_url: str, **more: Any) -> dict[str, Any]:
    return {"base_url": base_url, "model": MODEL, "temperature": 0, "timeout_s": 60, **more}


async def test_openai_brain_streams_from_a_real_llama_cpp_server(llama_server: str) -> None:
    brain = create_brain("openai", openai_options(llama_server, max_tokens=32))

    async def no_tools(name: str, params: dict[str, Any]) -> ToolResult:
        raise AssertionError("no tools were offered")

    try:
        pieces = [
            p
            async for p in brain.respond(
                [ChatMessage("user", "Tell me about cats.")],
                system_prompt="You are a helpful assistant.",
                tools=[],
                call_tool=no_tools,
            )
        ]
    finally:
        await brain.aclose()
    assert len(pieces) > 3, pieces  # streamed, not one piece at the end
    assert "".join(pieces).strip()


async def test_openai_brain_runs_a_tool_call_from_a_real_server(llama_server: str) -> None:
    from sagelab.config import ToolSpec

    calls: list[tuple[str, dict[str, Any]]] = []

    async def call_tool(name: str, params: dict[str, Any]) -> ToolResult:
        calls.append((name, params))
        return ToolResult("c", {"summary": "Lena Vogel's status changed from active to paused."})

    brain = create_brain("openai", openai_options(llama_server, max_tokens=48, **FORCE))
    try:
        reply = "".join(
            [
                p
                async for p in brain.respond(
                    [ChatMessage("user", "Update record five, set the status to paused.")],
                    system_prompt="You change customer accounts with update_record.",
                    tools=[ToolSpec.model_validate(UPDATE)],
                    call_tool=call_tool,
                )
            ]
        )
    finally:
        await brain.aclose()
    assert len(calls) == 1, calls
    name, params = calls[0]
    assert name == "update_record" and set(params) >= {"record_id", "field", "value"}, params
    # The second request (history with the call and its result, tools forbidden) was accepted
    # and streamed to its end; what the 135M model says then, often nothing, is its business.
    assert "{" not in reply


async def test_a_spoken_conversation_through_the_openai_brain(llama_server, tmp_path) -> None:
    """audio-sage-llm with ``brain: openai`` pointed at llama.cpp: speech in, a streamed tool
    call through the real server, run against the demo database, no error."""
    from sagelab.audio import load_audio

    config = load_config(None, env={}, port=0, store_path=str(tmp_path / "store.sqlite3"))
    config.agents = [a for a in config.agents if a.id == "audio-sage-llm"]
    config.idle_timeout_s = 300  # the client goes quiet while a loaded machine thinks
    spec = config.agents[0]
    spec.options = {
        **spec.options,
        "server_tools": {**spec.options["server_tools"], "database": str(tmp_path / "db.sqlite3")},
        "brain": "openai",
        "brain_options": openai_options(llama_server, max_tokens=48, **FORCE),
        "stt": {"window": "full"},  # a stable "paused" (see PINNED_STT in test_audio_sage_llm)
    }
    async with (
        SagelabServer(config) as server,
        Session.connect(server.http_url, "audio-sage-llm") as s,
    ):
        await s.wait_for("agent_response", timeout=30)
        await s.wait_agent_done(timeout=60)
        mark = s.mark()
        await s.send_audio(load_audio(DEMO / "user" / "03_update.wav"), trailing_silence_ms=1500)
        # The server tool's call and result are announced to the client as they happen.
        await s.wait_for("agent_tool_response", since=mark, timeout=120)
        with contextlib.suppress(TimeoutError):  # the 135M model often answers nothing here
            await s.wait_agent_done(timeout=30)
        events = s.timeline.events[mark:]
        server.store.flush()
        stored = server.store.get_conversation(s.conversation_id)
    heard = [e.data["user_transcript"] for e in events if e.type == "user_transcript"]
    assert heard and normalize(heard[0]) == "update record five set the status to paused"
    assert not [e.data for e in events if e.type == "error"]
    calls = stored["tool_calls"]
    assert calls and calls[0]["name"] == "update_record", calls
    # Validated and run by the demo registry against SQLite: a success, or its own error
    # message for values the model got wrong, never a crash.
    assert calls[0]["result"] is not None, json.dumps(calls[0])
