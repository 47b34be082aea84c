"""Every notebook in ``notebooks/`` runs headless (nbclient) against the bundled server, and its
key outputs are checked: what the agent heard, what it answered, the tools it ran and the
latency table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from nb_helpers import REPO, scratch_notebooks

from sagelab.metrics.accuracy import score

if TYPE_CHECKING:  # nbformat and nbclient cost ~2 s of imports in every test worker
    import nbformat

pytestmark = pytest.mark.timeout(300)
# These run with their work shrunk (SAGELAB_NB_* parameters) in test_analysis_notebooks.py.
ANALYSIS_NOTEBOOKS = {"02_latency_accuracy.ipynb", "03_load_test.ipynb", "04_prompt_tool_lab.ipynb"}
NOTEBOOKS = sorted(
    p.name for p in (REPO / "notebooks").glob("*.ipynb") if p.name not in ANALYSIS_NOTEBOOKS
)


def run_notebook(name: str, root: Path) -> nbformat.NotebookNode:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(root / "notebooks" / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    )
    client.execute()
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture
def notebook_env(tmp_path: Path, audio_sage_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAGELAB_URL", audio_sage_url)  # the kernel inherits it
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    return scratch_notebooks(tmp_path)


def check_conversation(out: str, root: Path) -> None:
    printed = dict(line.partition(": ")[::2] for line in out.splitlines() if ": " in line)
    assert "Audio Sage" in printed["agent"] or "Audio Sage" in out  # the greeting
    assert score("Search for customers in Oslo.", printed["user"]).wer <= 0.2
    assert "Anna Berg" in printed["agent"]  # the answer came from the tool over the database
    assert "('search_records', 'ok')" in printed["tools"]
    assert "voice_to_voice_ms" in out  # the latency table
    saved = next(root.glob("runs/notebook-*/timeline.jsonl"))
    assert saved.stat().st_size > 0


KEY_OUTPUTS = {"01_conversation.ipynb": check_conversation}


def test_there_are_notebooks() -> None:
    assert "01_conversation.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless(name: str, notebook_env: Path) -> None:
    nb = run_notebook(name, notebook_env)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    check = KEY_OUTPUTS.get(name)
    if check is not None:
        check(text_of(nb), notebook_env)
