"""Server tools: tools an agent's backend calls that run inside the server, not the client.

An agent declares them in its ``tools`` with ``type: server`` and names, in its options, the
factory that builds the ``ToolRegistry`` holding their implementations::

    options:
      server_tools:
        factory: sagelab.tools.demo:demo_registry_at   # "module:function"
        database: runs/audio-sage.sqlite3              # keyword arguments for the factory

One registry per agent is built when the server starts and shared by its sessions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagelab.config import AgentSpec
    from sagelab.tools import ToolRegistry


class ServerToolsError(ValueError):
    """The agents file names a server-tools factory that cannot be loaded or called."""


def load_server_tools(spec: AgentSpec) -> ToolRegistry | None:
    options = spec.options.get("server_tools")
    if not options:
        return None
    if not isinstance(options, dict) or "factory" not in options:
        raise ServerToolsError(
            f"agent {spec.id!r}: options.server_tools needs a 'factory' "
            "like 'package.module:function'"
        )
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k != "factory"}
    target = str(options["factory"])
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ServerToolsError(
            f"agent {spec.id!r}: cannot load server tools {target!r}: {exc}"
        ) from exc
    registry = factory(**kwargs)
    declared = {t.name for t in spec.tools if t.type == "server"}
    missing = sorted(declared - {a.name for a in registry.actions()})
    if missing:
        raise ServerToolsError(
            f"agent {spec.id!r} declares server tools {missing} that {target} does not provide"
        )
    return registry
