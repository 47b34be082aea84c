"""The offline voice agent (VAD → STT → brain → TTS). Heavy imports happen in ``create``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagelab.agents.base import Agent, AgentContext


def create(ctx: AgentContext, base_dir: Path) -> Agent:
    from sagelab.agents.local.factory import create as _create

    return _create(ctx, base_dir)


def prepare(options: dict[str, Any], base_dir: Path) -> None:
    from sagelab.agents.local.factory import prepare as _prepare

    _prepare(options, base_dir)
