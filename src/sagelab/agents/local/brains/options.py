"""Validation of ``brain_options``, shared by the brains.

Options come from a hand-edited agents file, so a typo must fail at server start with the key's
path, not as a silent default in the middle of a call.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sagelab.agents.local.brain import BrainError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(model: type[OptionsT], options: dict[str, Any], brain: str) -> OptionsT:
    """Validate ``options`` against ``model``; ``BrainError`` naming each bad key otherwise."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(options)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BrainError(f"brain_options for the {brain!r} brain: {problems}") from exc
