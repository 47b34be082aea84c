"""A command whose optional extra is missing ends with one line naming the extra to install."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sagelab.extras import EXTRAS, MissingExtra, missing_extra, require

pytestmark = pytest.mark.fast


def _run_blocked(tmp_path: Path, blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``sagelab ARGS`` in a fresh interpreter where importing ``blocked`` fails, as it does
    when the extra that brings it was not installed."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['sagelab', *{list(args)!r}]; "
        "from sagelab.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("blocked", "extra", "args"),
    [
        ("faster_whisper", "local", ["demo"]),
        ("jiwer", "metrics", ["bench", "accuracy"]),
        ("locust", "loadtest", ["loadtest", "--users", "1", "--run-time", "1s"]),
    ],
)
def test_missing_extra_is_one_line(tmp_path: Path, blocked: str, extra: str, args: list[str]):
    done = _run_blocked(tmp_path, blocked, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert blocked in lines[0] and f"pip install 'sagelab[{extra}]'" in lines[0]
    assert not list(tmp_path.iterdir()), "nothing was started or written"


def test_require_names_the_first_missing_module(monkeypatch: pytest.MonkeyPatch) -> None:
    require("local", "metrics")  # the test environment has every extra
    monkeypatch.setitem(sys.modules, "jiwer", None)
    with pytest.raises(MissingExtra, match=r"jiwer is not installed.*sagelab\[metrics\]"):
        require("local", "metrics")


def test_missing_extra_follows_the_exception_chain() -> None:
    try:
        try:
            raise ModuleNotFoundError("No module named 'piper.voice'", name="piper.voice")
        except ImportError as inner:
            raise RuntimeError("agent could not start") from inner
    except RuntimeError as outer:
        found = missing_extra(outer)
    assert found is not None and (found.module, found.extra) == ("piper", "local")
    assert missing_extra(ModuleNotFoundError("x", name="not_an_extra_module")) is None
    assert missing_extra(ValueError("unrelated")) is None


def _extras_in_metadata() -> dict[str, set[str]]:
    """Extra → normalised distribution names, from the installed sagelab's own metadata."""
    found: dict[str, set[str]] = {}
    for req in metadata.requires("sagelab") or []:
        marker = re.search(r"extra\s*==\s*['\"]([\w-]+)['\"]", req)
        if marker:
            dist = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
            found.setdefault(marker.group(1), set()).add(re.sub(r"[-_.]+", "-", dist).lower())
    return found


def test_every_module_of_an_extra_is_declared_by_that_extra() -> None:
    declared = _extras_in_metadata()
    owners = metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        assert extra in declared, f"extra {extra!r} is not in pyproject.toml"
        for module in modules:
            dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
            assert dists & declared[extra], f"{module} (from {dists}) is not declared in [{extra}]"
