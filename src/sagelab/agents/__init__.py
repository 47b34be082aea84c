"""Agent backends behind one interface (see ``sagelab.agents.base``)."""

from sagelab.agents.base import Agent, AgentContext, AgentTurn, ResolvedAgent, ToolResult
from sagelab.agents.registry import BackendError, create_agent, register_backend

__all__ = [
    "Agent",
    "AgentContext",
    "AgentTurn",
    "BackendError",
    "ResolvedAgent",
    "ToolResult",
    "create_agent",
    "register_backend",
]
