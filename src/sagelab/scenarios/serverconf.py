"""The agents file a scenario run's own server starts from.

A run must not depend on what earlier runs left behind: the demo database is edited by the
scenarios (``update_record``), so each run gets a fresh copy, seeded from scratch, and its own
conversation store (which is also where server tool parameters are read back from, since the
ConvAI protocol does not send them to the client). The file is written into the run folder,
so the paths the original file gave relative to itself are made absolute first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sagelab.config import ServerConfig, load_config
from sagelab.scenarios.loader import ScenarioError

STORE_NAME = "conversations.sqlite3"


def write_run_config(config: Path | None, agents: Iterable[str], run_dir: Path) -> Path:
    """Write ``run_dir/agents.yaml``: only ``agents``, fresh tool databases, a run store."""
    cfg = load_config(config, port=0, store_path=str(run_dir / STORE_NAME))
    wanted = sorted(set(agents))
    known = {a.id for a in cfg.agents}
    missing = [a for a in wanted if a not in known]
    if missing:
        raise ScenarioError(
            f"the scenarios talk to agent(s) {', '.join(missing)}, which the agents file "
            f"{config or 'bundled with sagelab'} does not define "
            f"(it has: {', '.join(sorted(known))}); "
            "fix the scenario's 'agent:' or pass --config with an agents file that has them"
        )
    raw = cfg.model_dump(mode="json", exclude={"base_dir"}, exclude_unset=True)
    raw["agents"] = [
        _prepare_agent(a, cfg, run_dir) for a in raw["agents"] if a["id"] in set(wanted)
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "agents.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _prepare_agent(agent: dict[str, Any], cfg: ServerConfig, run_dir: Path) -> dict[str, Any]:
    options = _absolute(agent.get("options") or {}, cfg.base_dir)
    tools = options.get("server_tools")
    if isinstance(tools, dict) and "database" in tools:
        options["server_tools"] = {**tools, "database": str(run_dir / f"{agent['id']}.sqlite3")}
    return {**agent, "options": options}


def _absolute(value: Any, base: Path) -> Any:
    """Strings naming files that exist next to the original agents file become absolute."""
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and "\n" not in value:
        candidate = base / value
        try:
            if candidate.is_file():
                return str(candidate.resolve())
        except OSError:  # not a path at all (too long, odd characters)
            return value
    return value
