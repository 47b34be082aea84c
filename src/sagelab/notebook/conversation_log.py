"""What the panel shows, built from the session's messages: transcript lines and tool calls.

Plain rows of strings and numbers, synced to the view as they are; the view renders every field
with ``textContent``, so a transcript or a tool result that looks like HTML is shown as text.

An interrupted agent line keeps the whole reply in ``text`` and what was heard of it in
``heard``: from the player's own report of how much it played (``played_ms``) when there is
one, else from the server's ``agent_response_correction`` (the server only models playback).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from sagelab.protocol import convai as wire

MAX_RESULT_CHARS = 400


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 1] + "…"


class ConversationLog:
    """Transcript (``user`` / ``agent`` / ``note`` lines) and tool calls of one conversation.

    ``apply`` takes a server message and returns the names of what changed (``transcript``,
    ``tool_calls``, ``error``), so the widget syncs only those. Thread-safe: messages arrive on
    the session's loop thread, typed input and tool results on others.
    """

    def __init__(self) -> None:
        self.transcript: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.error = ""
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return [dict(r) for r in self.transcript], [dict(r) for r in self.tool_calls]

    def user_typed(self, text: str) -> None:
        with self._lock:
            self.transcript.append({"role": "user", "text": text, "event_id": None})

    def note(self, text: str) -> None:
        with self._lock:
            self.transcript.append({"role": "note", "text": text, "event_id": None})

    def heard(self, event_id: int, text: str, played_ms: float | None) -> bool:
        """Mark agent turn ``event_id`` as cut, ``text`` being what was heard of it."""
        with self._lock:
            line = self._agent_line(event_id)
            if line is None:
                return False
            line.update(interrupted=True, heard=text, played_ms=played_ms)
            return True

    def mark_cut(self, event_id: int, played_ms: float) -> bool:
        """Mark agent turn ``event_id`` as cut after ``played_ms``, words heard not known yet."""
        with self._lock:
            line = self._agent_line(event_id)
            if line is None:
                return False
            line.update(interrupted=True, played_ms=played_ms)
            return True

    def interrupted(self, event_id: int) -> bool:
        """Whether agent turn ``event_id`` is marked cut (by the server or the player)."""
        with self._lock:
            line = self._agent_line(event_id)
            return bool(line and line.get("interrupted"))

    def agent_text(self, event_id: int) -> str:
        with self._lock:
            line = self._agent_line(event_id)
            return str(line["text"]) if line else ""

    def _agent_line(self, event_id: int) -> dict[str, Any] | None:
        for line in reversed(self.transcript):
            if line["role"] == "agent" and line["event_id"] == event_id:
                return line
        return None

    def tool_result(self, tool_call_id: str, result: Any, is_error: bool) -> None:
        with self._lock:
            for call in self.tool_calls:
                if call["id"] == tool_call_id:
                    call["result"] = _short(result)
                    call["status"] = "error" if is_error else "ok"

    def apply(self, msg: Any) -> set[str]:
        with self._lock:
            return self._apply(msg)

    def _apply(self, msg: Any) -> set[str]:
        match msg:
            case wire.UserTranscript():
                self.transcript.append(
                    {"role": "user", "text": msg.user_transcript, "event_id": msg.event_id}
                )
                return {"transcript"}
            case wire.AgentResponse():
                self.transcript.append(
                    {"role": "agent", "text": msg.agent_response, "event_id": msg.event_id}
                )
                return {"transcript"}
            case wire.AgentResponseCorrection():
                line = self._agent_line(msg.event_id)
                if line is None:
                    return set()
                # What the user heard before the cut, as the server reckons it; the whole reply
                # stays in text. The player's own report (``heard``) wins over it: the server
                # only models when the client started playing.
                line["interrupted"] = True
                if line.get("played_ms") is None:
                    line["heard"] = msg.corrected_agent_response
                return {"transcript"}
            case wire.Interruption():
                line = self._agent_line(msg.event_id)
                if line is None:
                    return set()
                line["interrupted"] = True
                return {"transcript"}
            case wire.ClientToolCall():
                self.tool_calls.append(
                    {
                        "id": msg.tool_call_id,
                        "name": msg.tool_name,
                        "kind": "client",
                        "parameters": _short(msg.parameters),
                        "result": "",
                        "status": "running",
                        "event_id": msg.event_id,
                    }
                )
                return {"tool_calls"}
            case wire.AgentToolRequest():
                self.tool_calls.append(
                    {
                        "id": msg.tool_call_id,
                        "name": msg.tool_name,
                        "kind": msg.tool_type,
                        "parameters": "",
                        "result": "",
                        "status": "running",
                        "event_id": msg.event_id,
                    }
                )
                return {"tool_calls"}
            case wire.AgentToolResponse() | wire.AgentToolResponseFullPayload():
                call = next((c for c in self.tool_calls if c["id"] == msg.tool_call_id), None)
                if call is None:  # a response without a request (some servers send only this)
                    call = {
                        "id": msg.tool_call_id,
                        "name": msg.tool_name,
                        "kind": msg.tool_type,
                        "parameters": "",
                        "result": "",
                        "event_id": msg.event_id,
                    }
                    self.tool_calls.append(call)
                call["status"] = "error" if msg.is_error else "ok"
                if isinstance(msg, wire.AgentToolResponseFullPayload):
                    call["result"] = _short(msg.full_tool_result)
                return {"tool_calls"}
            case wire.UnknownServerMessage() if msg.type == wire.SagelabToolCall.type:
                try:
                    event = wire.SagelabToolCall.read(msg)
                except ValueError:  # a malformed extension event is not worth an error
                    return set()
                if event is None:
                    return set()
                call = next((c for c in self.tool_calls if c["id"] == event.tool_call_id), None)
                if call is None:
                    call = {
                        "id": event.tool_call_id,
                        "name": event.tool_name,
                        "kind": "server",
                        "result": "",
                        "status": "running",
                        "event_id": event.event_id,
                    }
                    self.tool_calls.append(call)
                call["parameters"] = _short(event.parameters)
                if event.result is not None or event.is_error is not None:
                    call["result"] = _short(event.result)
                    call["status"] = "error" if event.is_error else "ok"
                return {"tool_calls"}
            case wire.ErrorEvent():
                self.error = f"{msg.error_type or 'error'}: {msg.message or msg.reason or ''}"
                return {"error"}
            case wire.UnknownServerMessage() if msg.type == "error":
                self.error = f"error: {_short(msg.raw)}"
                return {"error"}
        return set()
