"""An agents file for the load test's own server, when the test needs auth turned on.

``--signed-url`` should exercise the real path a private agent takes (an API key asks
``get-signed-url``, the WebSocket carries a single-use signature the server checks), so the
server started for the test gets a copy of the agents file in which the agent under test
requires auth and one fresh API key is accepted. Only the key's SHA-256 goes into the file.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from sagelab.config import default_config_path
from sagelab.server.auth import hash_key


def with_auth(source: Path | None, agent_id: str, out: Path) -> str:
    """Write ``out`` (JSON) from ``source`` with ``agent_id`` requiring auth; return the key.

    Relative paths in agent options (recordings, models) are relative to the agents file, so
    those that exist next to ``source`` are made absolute: ``out`` lives elsewhere.
    """
    source = source or default_config_path()
    text = source.read_text(encoding="utf-8")
    raw = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("agents"), list):
        raise ValueError(f"{source} has no 'agents' list")
    agents = [a for a in raw["agents"] if isinstance(a, dict) and a.get("id") == agent_id]
    if not agents:
        known = ", ".join(str(a.get("id")) for a in raw["agents"] if isinstance(a, dict))
        raise ValueError(f"agent {agent_id!r} is not in {source}; it has: {known}")
    base = source.resolve().parent
    for agent in raw["agents"]:
        if isinstance(agent, dict) and "options" in agent:
            agent["options"] = _absolute(agent["options"], base)
    agents[0]["requires_auth"] = True
    key = f"sk_loadtest_{secrets.token_hex(16)}"
    raw["api_keys"] = [*raw.get("api_keys", []), hash_key(key)]
    out.write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return key


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, str) and value and len(value) < 256 and not Path(value).is_absolute():
        candidate = base / value
        try:
            if candidate.is_file():
                return str(candidate)
        except OSError:  # prose, not a path
            pass
    return value
