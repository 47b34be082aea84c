"""The tier lists in ``tests/conftest.py`` name tests that exist.

A test renamed or moved without its entry would silently fall back to the ``fast`` tier (and
a module renamed would lose its tier altogether), so ``make check`` would start running a
test that takes seconds or needs a model. The lists are text; so is this check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import conftest

TESTS = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.fast


def test_every_listed_module_exists() -> None:
    listed = [*conftest.MODULE_TIERS, *conftest.LONGEST_FIRST.split()]
    missing = [m for m in listed if not (TESTS / m).is_file()]
    assert not missing, f"tier lists name modules that do not exist: {missing}"


def test_every_listed_test_exists() -> None:
    missing = []
    for entry in conftest.TEST_TIERS:
        module, name = entry.split("::")
        path = TESTS / module
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if not re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", text, re.MULTILINE):
            missing.append(entry)
    assert not missing, f"tier lists name tests that do not exist: {missing}"
