"""Push actions to a ConvAI agent as client tools, and pull an agent's tools back as actions.

Both go through the official SDK's REST client, so the same call works against the bundled
server (``base_url="http://127.0.0.1:8765"``) and against ElevenLabs itself (``base_url=None``):
an experiment with tools and a prompt locally is one ``base_url`` away from the real agent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from elevenlabs.client import ElevenLabs
from elevenlabs.types import ConversationalConfig, ToolRequestModel

from sagelab.tools.model import Action
from sagelab.tools.registry import ToolRegistry
from sagelab.tools.schema import from_json_schema, to_elevenlabs_client_tool

__all__ = ["pull", "push"]

log = logging.getLogger(__name__)


def push(
    tools: ToolRegistry | Iterable[Action],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    agent_id: str,
    prompt: str | None = None,
    first_message: str | None = None,
) -> list[str]:
    """Create each action as a client tool, then make exactly those the agent's tools.

    The agent's previous ``tool_ids`` are replaced, not extended: after a push the agent
    calls what the file declares and nothing stale. ``prompt`` and ``first_message`` are
    changed only when given. Returns the new tool ids, in the order of the actions.
    """
    actions = tools.actions() if isinstance(tools, ToolRegistry) else list(tools)
    client = _client(base_url, api_key)
    ids = []
    for action in actions:
        request = ToolRequestModel.model_validate(
            {"tool_config": to_elevenlabs_client_tool(action)}
        )
        created = client.conversational_ai.tools.create(request=request)
        ids.append(created.id)
    agent: dict[str, Any] = {"prompt": {"tool_ids": ids}}
    if prompt is not None:
        agent["prompt"]["prompt"] = prompt
    if first_message is not None:
        agent["first_message"] = first_message
    client.conversational_ai.agents.update(
        agent_id, conversation_config=ConversationalConfig.model_validate({"agent": agent})
    )
    return ids


def pull(
    *, base_url: str | None = None, api_key: str | None = None, agent_id: str
) -> tuple[list[Action], str]:
    """The agent's client tools as actions, and its prompt.

    Tools of other types (webhook, system, MCP) have no action form and are skipped with a
    log line; a client tool whose schema has no action type raises ``ValueError`` naming it.
    Defaults survive only as text in descriptions: the ElevenLabs dialect has no ``default``.
    """
    client = _client(base_url, api_key)
    agent = client.conversational_ai.agents.get(agent_id)
    config = agent.conversation_config.agent if agent.conversation_config else None
    prompt_config = config.prompt if config else None
    prompt = (prompt_config.prompt if prompt_config else None) or ""
    actions = []
    for tool_id in (prompt_config.tool_ids if prompt_config else None) or []:
        tool = client.conversational_ai.tools.get(tool_id).tool_config
        if tool.type != "client":
            log.info(
                "skipping tool %s of type %s: only client tools become actions", tool_id, tool.type
            )
            continue
        name = str(getattr(tool, "name", tool_id))
        description = str(getattr(tool, "description", "") or name)
        parameters = getattr(tool, "parameters", None)
        schema = (
            parameters.model_dump(mode="json", exclude_none=True, by_alias=True)
            if parameters is not None
            else {"type": "object", "properties": {}}
        )
        actions.append(from_json_schema(name, description, _with_defaults(schema)))
    return actions, prompt


_DEFAULT_NOTE = re.compile(r"\s*Default: (.+)\.$")


def _with_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Move "Default: <json>." back from descriptions (where the push put it) into
    ``default``, so a pushed action comes back equal to the one in the file."""
    properties = {}
    for key, prop in (schema.get("properties") or {}).items():
        match = (
            _DEFAULT_NOTE.search(str(prop.get("description", "")))
            if isinstance(prop, dict)
            else None
        )
        if match and key not in (schema.get("required") or []):
            try:
                default = json.loads(match.group(1))
            except json.JSONDecodeError:
                default = None
            if default is not None:
                text = prop["description"][: match.start()]
                prop = {**prop, "description": text, "default": default}
        properties[key] = prop
    return {**schema, "properties": properties}


def _client(base_url: str | None, api_key: str | None) -> ElevenLabs:
    # ElevenLabs(base_url=None) means the production API, which is what a user without a
    # local server wants.
    return ElevenLabs(api_key=api_key, base_url=base_url)
