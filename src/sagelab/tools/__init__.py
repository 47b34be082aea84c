"""Application actions as agent tools: typed actions, their schemas, a registry that runs them.

An action is declared once (in a YAML/JSON file or with ``@tool`` on a typed function) and
converts to every format an agent platform reads (JSON Schema, ElevenLabs client tools, OpenAI
functions, an agents file's ``ToolSpec``). A :class:`ToolRegistry` binds actions to handlers and
runs calls with validation, coercion, timeouts and per-tool statistics; every failure comes back
as a message for the agent rather than an exception.

The demo database and its actions live in :mod:`sagelab.tools.demo` (not imported here, so the
package stays free of SQLite set-up for users who bring their own tools).
"""

from sagelab.tools.decorator import Tool, action_from_function, tool
from sagelab.tools.execution import ErrorKind, ToolOutcome, ToolStats
from sagelab.tools.files import ActionFileError, load_actions, load_actions_file
from sagelab.tools.model import SCALAR_TYPES, Action, Parameter, ParameterType, ScalarType
from sagelab.tools.registry import ToolCallError, ToolRegistry
from sagelab.tools.schema import (
    from_json_schema,
    from_tool_spec,
    to_elevenlabs_client_tool,
    to_json_schema,
    to_openai_tool,
    to_tool_spec,
)
from sagelab.tools.validation import InvalidParameters, describe_signature, validate_parameters

__all__ = [
    "SCALAR_TYPES",
    "Action",
    "ActionFileError",
    "ErrorKind",
    "InvalidParameters",
    "Parameter",
    "ParameterType",
    "ScalarType",
    "Tool",
    "ToolCallError",
    "ToolOutcome",
    "ToolRegistry",
    "ToolStats",
    "action_from_function",
    "describe_signature",
    "from_json_schema",
    "from_tool_spec",
    "load_actions",
    "load_actions_file",
    "to_elevenlabs_client_tool",
    "to_json_schema",
    "to_openai_tool",
    "to_tool_spec",
    "tool",
    "validate_parameters",
]
