"""``@tool``: turn a typed Python function into an action, so the signature is the schema.

Writing a tool twice (once as code, once as JSON Schema) lets the two drift apart until the agent
sends arguments the code no longer accepts. Deriving the action from type hints and the docstring
keeps one source; anything the hints cannot express unambiguously (``Any``, ``*args``, unions of
two real types) is refused at decoration time with a message saying what to write instead.
"""

from __future__ import annotations

import datetime as dt
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import ValidationError

from sagelab.tools.docstrings import parse_docstring
from sagelab.tools.model import Action, Parameter, ScalarType

__all__ = ["Tool", "action_from_function", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

_SCALARS: dict[Any, ScalarType] = {
    str: "String",
    int: "Int",
    float: "Float",
    bool: "Boolean",
    dict: "JSON",
    dt.date: "Date",
    dt.datetime: "Date",
}


@dataclass(frozen=True)
class Tool(Generic[P, R]):
    """A function together with the action derived from it; calling it calls the function."""

    action: Action
    handler: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.handler(*args, **kwargs)

    @property
    def name(self) -> str:
        return self.action.name


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Use as ``@tool`` or ``@tool(name=..., description=...)`` on a sync or async function."""

    def wrap(f: Callable[P, R]) -> Tool[P, R]:
        return Tool(action_from_function(f, name=name, description=description), f)

    return wrap(fn) if fn is not None else wrap


def action_from_function(
    fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> Action:
    """Build the action for ``fn``; raises ``TypeError`` naming the parameter that cannot map."""
    where = getattr(fn, "__qualname__", repr(fn))
    doc = parse_docstring(inspect.getdoc(fn))
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as exc:
        raise TypeError(f"{where}: cannot resolve type hints ({exc})") from exc
    params = [
        _parameter(where, p, hints, doc.params.get(p.name, ""))
        for p in inspect.signature(fn).parameters.values()
    ]
    try:
        return Action(
            name=name or fn.__name__,
            description=description if description is not None else doc.description,
            parameters=tuple(params),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'action'}: {e['msg']}" for e in exc.errors()
        )
        hint = "" if doc.description else " (give it a docstring or description=...)"
        raise TypeError(f"{where}: {problems}{hint}") from exc


def _parameter(
    where: str, p: inspect.Parameter, hints: dict[str, Any], description: str
) -> Parameter:
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
        raise TypeError(
            f"{where}: parameter {p.name!r} must be a plain or keyword-only parameter, because "
            "tools are called with keyword arguments"
        )
    if p.name not in hints:
        raise TypeError(f"{where}: parameter {p.name!r} needs a type hint")
    annotation, optional = _unwrap_optional(hints[p.name])
    has_default = p.default is not inspect.Parameter.empty
    fields: dict[str, Any] = {"name": p.name, "description": description}
    fields.update(_type_fields(where, p.name, annotation))
    fields["required"] = not (optional or has_default)
    if has_default and p.default is not None:
        fields["default"] = list(p.default) if isinstance(p.default, tuple) else p.default
    try:
        return Parameter(**fields)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise TypeError(f"{where}: parameter {p.name!r}: {problems}") from exc


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            return rest[0], True
    return annotation, False


def _type_fields(where: str, name: str, annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if annotation is list or origin is list:
        args = typing.get_args(annotation)
        item = args[0] if args else dict
        if typing.get_origin(item) is list or item is list:
            raise TypeError(f"{where}: parameter {name!r}: lists of lists are not supported")
        return {"type": "List", **_scalar_fields(where, name, item, as_items=True)}
    return _scalar_fields(where, name, annotation, as_items=False)


def _scalar_fields(where: str, name: str, annotation: Any, *, as_items: bool) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    key = "items" if as_items else "type"
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if not all(isinstance(v, str) for v in values):
            raise TypeError(f"{where}: parameter {name!r}: Literal values must all be strings")
        return {key: "String", "enum": values}
    if origin is dict:
        return {key: "JSON"}
    if annotation in _SCALARS:
        return {key: _SCALARS[annotation]}
    raise TypeError(
        f"{where}: parameter {name!r} has type {annotation!r}, which has no action type; use "
        "str, int, float, bool, dict, datetime.date, datetime.datetime, Literal[...] or list[...]"
    )
