"""Backend name → agent factory, so the agents file can name a backend as a string."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from sagelab.agents.base import Agent, AgentContext
from sagelab.extras import missing_extra

AgentFactory = Callable[[AgentContext, Path], Agent]


class BackendError(RuntimeError):
    """A backend could not be created (unknown name, missing optional dependency, bad options)."""


# Lazy imports keep the server importable without the heavy optional extras (local models).
_BUILTIN = {
    "scripted": "sagelab.agents.scripted:create",
    "local": "sagelab.agents.local:create",
    "elevenlabs": "sagelab.agents.elevenlabs:create",
}
_registered: dict[str, AgentFactory] = {}


def register_backend(name: str, factory: AgentFactory) -> None:
    """Make ``backend: <name>`` in an agents file use ``factory(ctx, base_dir)``."""
    _registered[name] = factory


def create_agent(ctx: AgentContext, base_dir: Path) -> Agent:
    name = ctx.agent.backend
    factory = _registered.get(name)
    if factory is None:
        target = _BUILTIN.get(name)
        if target is None:
            known = sorted({*_BUILTIN, *_registered})
            raise BackendError(f"unknown agent backend {name!r}; known backends: {known}")
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = missing_extra(exc)
            raise BackendError(f"backend {name!r} cannot start: {missing or exc}") from exc
        factory = getattr(module, attr)
        _registered[name] = factory
    return factory(ctx, base_dir)
