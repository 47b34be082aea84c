"""High: one typed message must not stall the server (the rules brain's intent patterns).

The attack: a ``user_message`` of 96 KB that the bundled ``update`` pattern almost matches
("update record 5 status ..." repeated, ending in a word with an apostrophe). Before the fix
its quadratic backtracking ran on the event loop for over 10 s and every session froze.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from security_helpers import HealthySession, http_request, sage_config, text_only_init

from sagelab.config import ConfigError
from sagelab.server.app import SagelabServer

pytestmark = pytest.mark.model

ATTACK_BYTES = 96 * 1024


def _attack_text() -> str:
    unit = "update record 5 status "
    return (unit * (ATTACK_BYTES // len(unit) + 1))[: ATTACK_BYTES - 5] + " it's"


async def _healthz_ms(port: int) -> float:
    t0 = time.perf_counter()
    answer = await http_request(port, "GET", "/healthz")
    assert answer.status == 200
    return (time.perf_counter() - t0) * 1000


async def test_a_96_kb_typed_message_leaves_healthz_and_a_healthy_session_answering(tmp_path):
    async with SagelabServer(sage_config(tmp_path)) as server:
        url = f"{server.ws_url}/v1/convai/conversation?agent_id=audio-sage"
        async with (
            HealthySession(url, init=text_only_init()) as healthy,
            HealthySession(url, init=text_only_init()) as attacker,
        ):
            healthy.mark()
            assert attacker.ws is not None
            await attacker.ws.send(json.dumps({"type": "user_message", "text": _attack_text()}))
            # Ask /healthz repeatedly while the server works on the message.
            healthz = [await _healthz_ms(server.port) for _ in range(10)]
            await asyncio.sleep(0.3)
            answer = await attacker.wait_for("agent_response", timeout=10)
            reply = await healthy.say("help")

    print(f"healthz ms: {sorted(healthz)}; ping rtt ms worst {healthy.worst_rtt_ms:.1f}")
    assert max(healthz) < 250, healthz
    assert healthy.worst_rtt_ms < 250, healthy.rtts_ms
    assert "I can do three things" in reply
    # The attacker got an answer too (the fallback or the update intent), not a hang.
    assert answer["agent_response_event"]["agent_response"]


async def test_a_configured_pattern_that_backtracks_stops_the_server_start(tmp_path):
    config = sage_config(tmp_path)
    spec = config.agents[0]
    options = dict(spec.options)
    brain = dict(options["brain_options"])
    brain["intents"] = [
        *brain["intents"],
        {"name": "greedy", "patterns": ["(\\w+ ?)*thanks$"], "answer": "You are welcome."},
    ]
    options["brain_options"] = brain
    spec.options = options
    with pytest.raises(ConfigError, match=r"audio-sage.*repeats a group"):
        async with SagelabServer(config):
            pass
