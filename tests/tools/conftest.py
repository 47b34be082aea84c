"""Shared fixtures: one action using every parameter type, declared as a typed function."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import pytest

from sagelab.tools import Action, Tool, tool

REPO = Path(__file__).resolve().parents[2]


@tool
def plan_trip(
    city: str,
    nights: int,
    budget: float,
    pets: bool,
    preferences: dict[str, Any],
    start: dt.date,
    seat: Literal["window", "aisle"],
    guests: list[int],
    tags: list[str] | None = None,
    meals: list[Literal["breakfast", "dinner"]] | None = None,
    arrival: dt.datetime | None = None,
    note: str = "none",
    rating: float = 4.5,
    late_checkout: bool = False,
    rooms: int = 1,
    extras: dict[str, Any] | None = None,
    weights: list[float] | None = None,
    dates: list[dt.date] | None = None,
) -> dict[str, Any]:
    """Plan a trip for the user.

    Use it once the user has said where and for how long.

    Args:
        city: Where to go.
        nights (int): How many nights to stay.
        budget: Total budget in euros,
            including taxes.
        pets: Whether pets come along.
        preferences: Free-form preferences.
        start: First day of the trip.
        seat: Preferred seat.
        guests: Ages of the guests.
        tags: Labels for the trip.
        meals: Meals to include.
        arrival: When the user arrives.
        note: A note for the hotel.
        rating: Minimum hotel rating.
        late_checkout: Ask for a late checkout.
        rooms: How many rooms.
        extras: Anything else.
        weights: Luggage weights in kg.
        dates: Dates of excursions.

    Returns:
        The plan.
    """
    return {
        "city": city,
        "nights": nights,
        "budget": budget,
        "pets": pets,
        "preferences": preferences,
        "start": start,
        "seat": seat,
        "guests": guests,
        "tags": tags,
        "meals": meals,
        "arrival": arrival,
        "note": note,
        "rating": rating,
        "late_checkout": late_checkout,
        "rooms": rooms,
        "extras": extras,
        "weights": weights,
        "dates": dates,
    }


@pytest.fixture
def trip_tool() -> Tool[..., dict[str, Any]]:
    return plan_trip


@pytest.fixture
def trip_action() -> Action:
    return plan_trip.action
