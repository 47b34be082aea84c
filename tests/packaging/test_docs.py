"""The README is a five-minute start whose links stay inside the repository, and nothing the
package or its docs ship points at paths of one machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub/MkDocs heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_readme_is_short() -> None:
    words = len((REPO / "README.md").read_text(encoding="utf-8").split())
    assert words < 1500, f"README.md has {words} words; move detail into docs/"


def test_every_readme_link_resolves_inside_the_repository() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = LINK.findall(text)
    assert links, "the README links into docs/"
    for link in links:
        assert "://" not in link and not link.startswith("/"), f"{link}: outside the repository"
        path, _, anchor = link.partition("#")
        target = (REPO / path).resolve() if path else REPO / "README.md"
        assert target.is_relative_to(REPO), f"{link}: outside the repository"
        assert target.exists(), f"{link}: no such file"
        if anchor:
            assert anchor in _anchors(target.read_text(encoding="utf-8")), f"{link}: no heading"


def test_no_paths_of_one_machine() -> None:
    """Docstrings, docs and notebooks-to-be-shipped name files relative to the package or the
    repository, never the development machine's folders."""
    roots = [REPO / "src", REPO / "docs", REPO / "README.md", REPO / "mkdocs.yml"]
    files = [p for r in roots for p in ([r] if r.is_file() else r.rglob("*")) if p.is_file()]
    pattern = re.compile(r"/work/|shared/docs|\.\./shared")
    offenders = [
        str(p.relative_to(REPO))
        for p in files
        if p.suffix in {".py", ".md", ".yaml", ".yml", ".json", ".txt"}
        and "egg-info" not in str(p)
        and pattern.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not offenders, f"paths of this machine in: {offenders}"
