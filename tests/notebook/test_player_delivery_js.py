"""The player's end report in a real browser page, without Jupyter: it lists when each chunk
reached the player and how long it was, the kernel accepts the list, and the playout model on
it agrees with the player's own underrun reports (``sagelab.metrics.delivered_chunk_table``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from sagelab.metrics import delivered_chunk_table, player_playout, playout
from sagelab.notebook.assets import source
from sagelab.notebook.messages import MAX_ARRIVALS, ClockSync, parse_player_events

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True)
        page = browser.new_page()
        page.set_content("<button id='go'>go</button>")
        page.click("#go")  # a user gesture: the page may play sound
        page.add_script_tag(content=source("player.js"))
        yield page
        browser.close()


def records(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports as the kernel reads them (the page's clock is the kernel's here)."""
    clock = ClockSync()
    clock.add(0, 0.0, 0)
    return [e.record() for e in parse_player_events({"events": reports}, clock)]


def test_the_end_report_lists_the_chunks_as_they_arrived(page: Page) -> None:
    jitter_ms = 80
    # 100 ms chunks in real time, the fourth 350 ms late: one underrun.
    schedule = [0, 100, 200, 650, 750, 850]
    result = page.evaluate(
        """async ([schedule, jitterMs]) => {
            const player = new PcmPlayer({ jitterMs, endAfterMs: 300 });
            const reports = [];
            player.onReport = (e) => reports.push(e);
            player.ensureContext();
            await player.context.resume();
            const chunk = new Int16Array(1600).fill(3000);
            const arrivals = [];
            const t0 = performance.now() + 50;
            for (const at of schedule) {
                const wait = t0 + at - performance.now();
                if (wait > 0) await new Promise((r) => setTimeout(r, wait));
                arrivals.push(performance.now());
                player.push(1, chunk);
            }
            while (!reports.some((r) => r.kind === "end")) {
                await new Promise((r) => setTimeout(r, 50));
            }
            await player.close();
            return { arrivals, reports };
        }""",
        [schedule, jitter_ms],
    )
    rows = records(result["reports"])
    end = next(r for r in rows if r["type"] == "playback_end")
    assert end["arrivals_ms"] == pytest.approx(result["arrivals"], abs=1.0)
    assert end["durations_ms"] == [100.0] * len(schedule)
    assert end["arrivals_left_off"] == 0 and not end["flushed"]

    delivered = playout(delivered_chunk_table(rows), jitter_buffer_ms=jitter_ms)
    heard = player_playout(rows)
    assert delivered.underrun_count >= 1  # the late chunk, and any the machine's timers added
    assert abs(heard.underrun_count - delivered.underrun_count) <= 1
    assert delivered.audio_ms == pytest.approx(heard.audio_ms, abs=1)


def test_a_flushed_turn_lists_what_came_before_the_flush_up_to_the_cap(page: Page) -> None:
    result = page.evaluate(
        """async (count) => {
            const player = new PcmPlayer({ jitterMs: 50 });
            const reports = [];
            player.onReport = (e) => reports.push(e);
            player.ensureContext();
            await player.context.resume();
            const chunk = new Int16Array(16).fill(1000); // 1 ms
            for (let i = 0; i < count; i++) player.push(4, chunk);
            const before = performance.now();
            player.flush(4);
            const after = performance.now();
            player.push(4, chunk); // stale: dropped, not listed
            await player.close();
            return { before, after, reports };
        }""",
        MAX_ARRIVALS + 3,
    )
    [end] = [r for r in records(result["reports"]) if r["type"] == "playback_end"]
    assert end["flushed"]
    assert len(end["arrivals_ms"]) == len(end["durations_ms"]) == MAX_ARRIVALS
    assert end["arrivals_left_off"] == 3
    assert result["before"] <= end["interrupted_ms"] <= result["after"]
    table = delivered_chunk_table([end])
    assert len(table) == MAX_ARRIVALS and table.attrs["chunks_left_off"] == 3
    assert table["interrupted_ns"].iloc[0] == pytest.approx(end["interrupted_ms"] * 1e6)
