"""A progress line for long notebook cells that stays visible where Run All leaves the user.

JupyterLab's Run All leaves the page where it was while the cells below run, so a progress
bar printed by a cell further down is off screen and the notebook looks frozen. A
``Progress`` is shown once near the top (the set-up cell) and may be shown again in the cell
doing the work; every copy shares one IPython display id, so each update redraws all of them.
It is plain text, so it reads the same in JupyterLab, in a saved notebook and in a headless
run (nbclient applies the updates too).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from IPython.display import Pretty, display, update_display

_BAR = 30


class Progress:
    """``Progress("02 latency")``; ``.show()`` where it should appear (again and again);
    ``.update("accuracy", done, total)`` from the work; ``.finish("done")``."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.display_id = f"sagelab-progress-{uuid.uuid4().hex[:12]}"
        self.started = time.monotonic()
        self.text = f"{title}: waiting to start"

    def show(self) -> Any:
        return display(Pretty(self.text), display_id=self.display_id)

    def update(self, stage: str, done: float | None = None, total: float | None = None) -> None:
        elapsed = time.monotonic() - self.started
        if done is not None and total:
            filled = max(0, min(_BAR, round(_BAR * done / total)))
            bar = f"[{'#' * filled}{'.' * (_BAR - filled)}] {done:g}/{total:g} "
        else:
            bar = ""
        self._set(f"{self.title}: {bar}{stage} ({elapsed:.0f} s)")

    def finish(self, note: str = "done") -> None:
        self._set(f"{self.title}: {note} in {time.monotonic() - self.started:.0f} s")

    def _set(self, text: str) -> None:
        self.text = text
        update_display(Pretty(text), display_id=self.display_id)
