"""The tier lists in ``tests/conftest.py`` name tests that exist.

A test renamed or moved without its entry would silently fall back to the ``fast`` tier (and
a module renamed would lose its tier altogether), so ``make check`` would start running a
test that takes seconds or needs a model. The lists are text; so is this check.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

TESTS = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.fast


def _suite_conftest() -> ModuleType:
    """``tests/conftest.py`` itself (``import conftest`` may find another folder's)."""
    spec = importlib.util.spec_from_file_location("_suite_conftest", TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conftest = _suite_conftest()


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
