"""``@tool`` derives the action from type hints and the docstring."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Optional

import pytest

from sagelab.tools import Action, Parameter, Tool, action_from_function, tool


def test_every_type_from_hints_and_docstring(trip_action: Action) -> None:
    p = {x.name: x for x in trip_action.parameters}
    assert trip_action.name == "plan_trip"
    assert trip_action.description == (
        "Plan a trip for the user.\n\nUse it once the user has said where and for how long."
    )
    assert p["city"] == Parameter(name="city", type="String", description="Where to go.")
    assert p["nights"] == Parameter(
        name="nights", type="Int", description="How many nights to stay."
    )
    assert p["budget"].type == "Float"
    assert p["budget"].description == "Total budget in euros, including taxes."
    assert p["pets"].type == "Boolean"
    assert p["preferences"].type == "JSON"
    assert p["start"].type == "Date"
    assert p["seat"] == Parameter(
        name="seat", type="String", enum=("window", "aisle"), description="Preferred seat."
    )
    assert p["guests"].type == "List" and p["guests"].items == "Int" and p["guests"].required
    assert p["tags"].items == "String" and not p["tags"].required and p["tags"].default is None
    assert p["meals"].items == "String" and p["meals"].enum == ("breakfast", "dinner")
    assert p["arrival"].type == "Date" and not p["arrival"].required
    assert p["note"].default == "none" and not p["note"].required
    assert p["rating"].default == 4.5
    assert p["late_checkout"].default is False and p["late_checkout"].type == "Boolean"
    assert p["rooms"].default == 1
    assert p["extras"].type == "JSON" and not p["extras"].required
    assert p["weights"].items == "Float"
    assert p["dates"].items == "Date"
    assert all(x.description for x in trip_action.parameters)


def test_the_decorated_function_still_works(trip_tool: Tool[..., Any]) -> None:
    assert isinstance(trip_tool, Tool)
    result = trip_tool("Oslo", 2, 100.0, False, {}, dt.date(2024, 1, 1), "aisle", [30])
    assert result["city"] == "Oslo" and result["rooms"] == 1


def test_name_and_description_overrides_and_async() -> None:
    @tool(name="find", description="Find things.")
    async def search(query: str) -> list[str]:
        """Ignored summary."""
        return [query]

    assert search.action.name == "find"
    assert search.action.description == "Find things."
    assert search.name == "find"


def test_numpy_and_sphinx_docstrings() -> None:
    def numpy_style(query: str, limit: int = 3) -> None:
        """Search the catalogue.

        Parameters
        ----------
        query : str
            What to look for,
            in plain words.
        limit : int, optional
            How many.

        Returns
        -------
        None
        """

    def sphinx_style(query: str, limit: Optional[int] = None) -> None:  # noqa: UP045
        """Search the catalogue.

        :param query: What to look for.
        :type query: str
        :param int limit: How many.
        :returns: nothing
        """

    n = action_from_function(numpy_style)
    assert n.description == "Search the catalogue."
    assert [p.description for p in n.parameters] == [
        "What to look for, in plain words.",
        "How many.",
    ]
    s = action_from_function(sphinx_style)
    assert [p.description for p in s.parameters] == ["What to look for.", "How many."]
    assert not s.parameters[1].required


def test_date_defaults_become_iso_text() -> None:
    def f(day: dt.date = dt.date(2024, 5, 31)) -> None:
        """Do it."""

    assert action_from_function(f).parameters[0].default == "2024-05-31"


def _no_hint(x) -> None:  # type: ignore[no-untyped-def]
    """Doc."""


def _any_hint(x: Any) -> None:
    """Doc."""


def _union(x: int | str) -> None:
    """Doc."""


def _varargs(*xs: int) -> None:
    """Doc."""


def _kwargs(**xs: int) -> None:
    """Doc."""


def _positional(x: int, /) -> None:
    """Doc."""


def _int_literal(x: Literal[1, 2]) -> None:
    """Doc."""


def _nested_list(x: list[list[int]]) -> None:
    """Doc."""


def _bad_default(x: int = "five") -> None:  # type: ignore[assignment]
    """Doc."""


def _no_doc(x: int) -> None:
    pass


def _unresolvable(x: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
    """Doc."""


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_no_hint, "'x' needs a type hint"),
        (_any_hint, "has no action type"),
        (_union, "has no action type"),
        (_varargs, "keyword-only"),
        (_kwargs, "keyword-only"),
        (_positional, "keyword-only"),
        (_int_literal, "Literal values must all be strings"),
        (_nested_list, "lists of lists"),
        (_bad_default, "does not fit x"),
        (_no_doc, "give it a docstring"),
        (_unresolvable, "cannot resolve type hints"),
    ],
)
def test_unmappable_functions_are_refused_naming_the_parameter(fn: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message) as info:
        tool(fn)
    assert fn.__name__ in str(info.value)
