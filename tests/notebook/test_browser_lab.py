"""Notebook 04 in a real browser at JupyterLab's default layout: Run All with the work shrunk,
then its comparison is checked for what makes it readable (tables that fit, timelines at the
notebook's full width), and screenshotted for the documentation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nb_helpers import Lab
from playwright.sync_api import ConsoleMessage, sync_playwright

pytestmark = [pytest.mark.timeout(420), pytest.mark.browser]


@pytest.fixture(scope="module")
def shrunk_lab() -> Iterator[None]:
    """The lab's kernels run 04 with two steps (search, then the update), one run each."""
    saved = {k: os.environ.get(k) for k in ("SAGELAB_NB_STEPS", "SAGELAB_NB_REPEAT")}
    os.environ.update(SAGELAB_NB_STEPS="2", SAGELAB_NB_REPEAT="1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_the_lab_comparison_is_readable_at_the_default_width(
    shrunk_lab: None, jupyter_lab: Lab, chromium: Path, artifacts: Path
) -> None:
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=str(chromium), headless=True)
        page = chrome.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(msg.text)

        page.on("console", on_console)
        page.goto(jupyter_lab.page_url("notebooks/04_prompt_tool_lab.ipynb"))
        page.wait_for_function(
            "() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
            timeout=60_000,
        )
        deadline = time.monotonic() + 60
        while not page.evaluate(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return !!k && k.status === 'idle'; }"
        ):
            assert time.monotonic() < deadline, "the notebook's kernel did not start"
            time.sleep(0.2)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jp-OutputArea-output >> text=saved to ", timeout=360_000)
        notebook_width = page.evaluate(
            "() => document.querySelector('.jp-Notebook .jp-Cell .jp-InputArea-editor')"
            ".getBoundingClientRect().width"
        )

        # The comparison and the verdicts fit the notebook: no horizontal scrolling.
        for text in ("A: full access", "update_record"):
            table = page.locator(".jp-OutputArea-output table", has_text=text).first
            overflow = table.evaluate(
                "t => t.getBoundingClientRect().right"
                " - t.closest('.jp-Cell').getBoundingClientRect().right"
            )
            assert overflow <= 1, f"the table with {text!r} runs {overflow} px past its cell"
        # The two timelines, one under the other, each as wide as the notebook's cells.
        cell = page.locator(".jp-CodeCell", has_text="one time scale for both")
        images = cell.locator(".jp-OutputArea-output img")
        assert images.count() == 2
        widths = images.evaluate_all("els => els.map(e => e.getBoundingClientRect().width)")
        assert min(widths) >= 0.85 * notebook_width, (widths, notebook_width)
        tops = images.evaluate_all("els => els.map(e => e.getBoundingClientRect().top)")
        assert tops[1] > tops[0]

        # The comparison as laid out in JupyterLab's default layout (file browser open).
        compare = page.locator(".jp-CodeCell", has_text="comparison = pd.DataFrame(rows)")
        compare.locator(".jp-OutputArea").evaluate(
            "out => { const pane = out.closest('.jp-WindowedPanel-outer') || out.parentElement;"
            " pane.scrollTop += out.getBoundingClientRect().top"
            " - pane.getBoundingClientRect().top - 8; }"
        )
        time.sleep(0.5)
        page.screenshot(path=str(artifacts / "notebook-04-comparison.png"))
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-OutputArea").screenshot(path=str(artifacts / "notebook-04-timelines.png"))
        assert errors == []
        chrome.close()
