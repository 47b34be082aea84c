"""Agent backends behind one interface (see ``sagelab.agents.base``)."""

from sagelab.agents.backends import BackendError, create_agent, register_backend
from sagelab.agents.base import Agent, AgentContext, AgentTurn, ResolvedAgent, ToolResult

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
