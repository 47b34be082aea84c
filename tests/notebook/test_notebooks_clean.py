"""The notebooks ship inside the package, clean: no outputs, nothing tied to this repository,
and ``sagelab notebooks DIR`` copies them to a folder of the user's choice.

``make test`` runs this file, so a notebook saved with its outputs fails the suite.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import nbformat
import pytest
from typer.testing import CliRunner

from sagelab.cli import app
from sagelab.notebook.workbench import NOTEBOOKS, copy_notebooks, notebooks_dir

pytestmark = pytest.mark.fast
PATHS = sorted(notebooks_dir().glob("*.ipynb"))
# What would tie a notebook to a source checkout: the repository's folders, relative links
# out of the notebook's folder, a search up the tree for data/.
REPO_LAYOUT = re.compile(r"\.\./|REPO\b|Path\.cwd\(\)\.parents|[\"'(]data/|README\.md")


def test_the_package_ships_every_notebook() -> None:
    assert [p.name for p in PATHS] == sorted(NOTEBOOKS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        cell.get("id")
        for cell in nb.cells
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert dirty == [], f"{path.name}: cells {dirty} hold outputs; clear them before committing"
    assert "widgets" not in nb.metadata, f"{path.name} holds saved widget state"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebook_does_not_rely_on_the_repository_layout(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    found = [
        (cell.get("id"), match.group(0))
        for cell in nb.cells
        for match in REPO_LAYOUT.finditer(cell.source)
    ]
    assert found == []


def test_the_check_sees_outputs(tmp_path: Path) -> None:
    """The check above fails on a notebook that ran (it is not a check that cannot fail)."""
    nb = nbformat.read(PATHS[0], as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.execution_count = 1
    saved = tmp_path / PATHS[0].name
    nbformat.write(nb, saved)
    with pytest.raises(AssertionError, match="hold outputs"):
        test_notebook_is_committed_without_outputs(saved)


def test_sagelab_notebooks_copies_them_and_keeps_edits(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "my notebooks"
    result = runner.invoke(app, ["notebooks", str(target)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == sorted(NOTEBOOKS)
    assert "jupyter lab" in result.output
    edited = target / NOTEBOOKS[0]
    edited.write_text(edited.read_text() + "\n")
    again = runner.invoke(app, ["notebooks", str(target)])
    assert again.exit_code == 1 and NOTEBOOKS[0] in again.output
    assert edited.read_text().endswith("\n\n")  # nothing was overwritten
    assert runner.invoke(app, ["notebooks", str(target), "--force"]).exit_code == 0
    assert edited.read_bytes() == (notebooks_dir() / NOTEBOOKS[0]).read_bytes()


def test_copying_onto_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        copy_notebooks(tmp_path / "file")


def test_the_notebook_extra_leaves_ipywebrtc_out() -> None:
    """ipywebrtc's JupyterLab extension warns on every page load (it asks for an older
    @jupyter-widgets/base), so only the ``webrtc`` extra installs it."""
    requires = importlib.metadata.requires("sagelab") or []
    notebook = [r for r in requires if 'extra == "notebook"' in r]
    assert notebook and not any(r.startswith("ipywebrtc") for r in notebook)
    assert any(r.startswith("ipywebrtc") and 'extra == "webrtc"' in r for r in requires)
