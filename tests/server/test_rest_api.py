"""The REST slice (tools, agent prompt) through the official SDK's REST client, on the same
port as WebSocket sessions and the GET routes, which must keep working alongside it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.types import ConversationalConfig, ToolRequestModel

from sagelab.client import Session
from sagelab.config import ServerConfig
from sagelab.server.app import SagelabServer
from sagelab.tools import load_actions, to_elevenlabs_client_tool
from sagelab.tools.sync import pull, push

DEMO_ACTIONS = Path(__file__).resolve().parents[2] / "data" / "actions" / "demo.yaml"

WEATHER = {
    "type": "client",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string", "description": "The city."}},
    },
    "expects_response": True,
    "response_timeout_secs": 10,
}


def _client(server: SagelabServer, key: str = "unused-locally") -> AsyncElevenLabs:
    return AsyncElevenLabs(api_key=key, base_url=server.http_url)


def _agent_patch(**agent: object) -> ConversationalConfig:
    return ConversationalConfig.model_validate({"agent": agent})


async def test_create_list_patch_agent_and_new_sessions_see_it(server, caplog):
    caplog.set_level(logging.INFO)
    client = _client(server)
    tool = await client.conversational_ai.tools.create(
        request=ToolRequestModel.model_validate({"tool_config": WEATHER})
    )
    assert tool.id.startswith("tool_")
    assert tool.tool_config.name == "get_weather"
    assert tool.access_info.is_creator and tool.usage_stats.avg_latency_secs == 0

    listed = await client.conversational_ai.tools.list()
    assert tool.id in [t.id for t in listed.tools]
    assert (await client.conversational_ai.tools.get(tool.id)).tool_config.name == "get_weather"

    updated = await client.conversational_ai.agents.update(
        "scripted",
        name="Weather agent",
        conversation_config=_agent_patch(
            first_message="Hi, ask me about the weather.",
            prompt={"prompt": "You tell the weather.", "tool_ids": [tool.id]},
        ),
    )
    assert updated.name == "Weather agent"
    agent = await client.conversational_ai.agents.get("scripted")
    assert agent.conversation_config.agent.first_message == "Hi, ask me about the weather."
    assert agent.conversation_config.agent.prompt.prompt == "You tell the weather."
    assert agent.conversation_config.agent.prompt.tool_ids == [tool.id]
    spec = server.config.agent("scripted")
    assert [t.name for t in spec.tools if t.type == "client"] == ["get_weather"]

    async with Session.connect(server.http_url, "scripted") as session:
        greeting = await session.wait_for("agent_response", timeout=5)
        assert greeting.data["agent_response"] == "Hi, ask me about the weather."

    # The intercepted connections end without websockets complaining about them.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


async def test_push_pull_round_trip(server):
    actions = load_actions(DEMO_ACTIONS)
    ids = await asyncio.to_thread(
        push,
        actions,
        base_url=server.http_url,
        api_key="unused-locally",
        agent_id="scripted",
        prompt="Help with customer accounts.",
        first_message="Accounts here.",
    )
    assert len(ids) == len(actions) == len(set(ids))
    pulled, prompt = await asyncio.to_thread(
        pull, base_url=server.http_url, api_key="unused-locally", agent_id="scripted"
    )
    assert prompt == "Help with customer accounts."
    assert pulled == actions
    assert server.config.agent("scripted").first_message == "Accounts here."


async def test_wrong_api_key_is_401(server_config: ServerConfig):
    server_config.api_keys = ["sk-1"]
    async with SagelabServer(server_config) as server:
        with pytest.raises(ApiError) as err:
            await _client(server, "sk-wrong").conversational_ai.tools.create(
                request=ToolRequestModel.model_validate({"tool_config": WEATHER})
            )
        assert err.value.status_code == 401
        with pytest.raises(ApiError) as err:
            await _client(server, "sk-wrong").conversational_ai.agents.get("scripted")
        assert err.value.status_code == 401
        created = await _client(server, "sk-1").conversational_ai.tools.create(
            request=ToolRequestModel.model_validate({"tool_config": WEATHER})
        )
        assert created.id.startswith("tool_")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "no spaces allowed"}, "tool_config.name"),
        ({"parameters": {"type": "string"}}, "object schema"),
        ({"parameters": {"type": "object", "properties": {}, "required": ["x"]}}, "unknown"),
        ({"type": "webhook"}, "tool_config.type"),
    ],
)
async def test_bad_tool_config_is_422(server, change, message):
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        r = await http.post("/v1/convai/tools", json={"tool_config": {**WEATHER, **change}})
    assert r.status_code == 422
    assert message in r.json()["detail"]["message"]


async def test_unknown_tool_id_is_422_and_changes_nothing(server):
    before = server.config.agent("scripted").model_copy(deep=True)
    with pytest.raises(ApiError) as err:
        await _client(server).conversational_ai.agents.update(
            "scripted",
            conversation_config=_agent_patch(
                first_message="never applied", prompt={"tool_ids": ["tool_nope"]}
            ),
        )
    assert err.value.status_code == 422
    assert "tool_nope" in json.dumps(err.value.body)
    assert server.config.agent("scripted") == before


async def test_unknown_agent_and_tool_are_404(server):
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/v1/convai/agents/nobody")).status_code == 404
        assert (await http.patch("/v1/convai/agents/nobody", json={})).status_code == 404
        assert (await http.get("/v1/convai/tools/tool_nope")).status_code == 404


async def test_oversized_body_is_413(server):
    big = b'{"tool_config": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        r = await http.post(
            "/v1/convai/tools", content=big, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_oversized_head_is_431(server):
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        r = await http.post("/v1/convai/tools", json={}, headers={"x-big": "y" * 20_000})
    assert r.status_code == 431


async def test_websockets_and_get_routes_work_alongside_rest(server):
    async with (
        Session.connect(server.http_url, "scripted") as session,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        await session.wait_for("agent_response", timeout=5)
        config = to_elevenlabs_client_tool(load_actions(DEMO_ACTIONS)[1])
        posts = [http.post("/v1/convai/tools", json={"tool_config": config}) for _ in range(10)]
        answers = await asyncio.gather(*posts, http.get("/healthz"), http.get("/metrics"))
        assert [a.status_code for a in answers] == [200] * 12
        mark = session.mark()
        await session.send_text("hello")
        reply = await session.wait_for("agent_response", since=mark, timeout=5)
        assert reply.data["agent_response"]
    assert len((await _client(server).conversational_ai.tools.list()).tools) == 10
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
