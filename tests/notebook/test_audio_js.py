"""The widgets' audio code in a real browser page, without Jupyter: the microphone worklet's
resampler, the player's underrun reports against ``sagelab.metrics``' playout model on the
same chunk arrivals (stutter injected on a known schedule), and the player's end report of
when each chunk reached it (``sagelab.metrics.delivered_chunk_table``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Page, sync_playwright

from sagelab.metrics import delivered_chunk_table, player_playout, playout
from sagelab.notebook.assets import source
from sagelab.notebook.messages import MAX_ARRIVALS, ClockSync, parse_player_events

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True)
        page = browser.new_page()
        page.set_content("<button id='go'>go</button>")
        page.click("#go")  # a user gesture: the page may play sound
        page.add_script_tag(content=source("worklet.js"))
        page.add_script_tag(content=source("player.js"))
        yield page
        browser.close()


def resample_in_browser(page: Page, signal: np.ndarray, rate: int) -> np.ndarray:
    out = page.evaluate(
        """([samples, rate]) => {
            const r = new Pcm16Resampler(rate, 16000);
            const out = [];
            for (let i = 0; i < samples.length; i += 128) {
                out.push(...r.process(Float32Array.from(samples.slice(i, i + 128))));
            }
            return out;
        }""",
        [signal.tolist(), rate],
    )
    return np.asarray(out, dtype=np.float64)


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_frequency(x: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [48_000, 44_100])
def test_resampler_keeps_speech_band_tones(page: Page, rate: int) -> None:
    out = resample_in_browser(page, tone(1000, rate), rate)
    assert out.size == pytest.approx(16_000, abs=40)  # one second, less the filter's tail
    steady = out[400:-400]
    assert dominant_frequency(steady) == pytest.approx(1000, abs=5)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


def test_resampler_removes_what_would_alias(page: Page) -> None:
    # 9 kHz is above the 8 kHz Nyquist of 16 kHz audio: dropping samples would fold it to 7 kHz.
    out = resample_in_browser(page, tone(9000, 48_000), 48_000)
    assert np.sqrt(np.mean(out[400:-400] ** 2)) < 1e-3 * (0.5 / np.sqrt(2))  # below -60 dB


def records(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The player's reports as the kernel reads them (the page's clock is the kernel's here)."""
    clock = ClockSync()
    clock.add(0, 0.0, 0)
    return [e.record() for e in parse_player_events({"events": reports}, clock)]


def play_on_schedule(
    page: Page, schedule: list[int], chunk: list[int], jitter_ms: int, end_after_ms: int
) -> dict[str, Any]:
    """Push ``chunk`` (PCM16 samples) into a fresh player at ``schedule`` (ms), as turn 1,
    until it reports the turn's end; the page's arrival times and the player's reports."""
    result: dict[str, Any] = page.evaluate(
        """async ([schedule, samples, jitterMs, endAfterMs]) => {
            const player = new PcmPlayer({ jitterMs, endAfterMs });
            const reports = [];
            player.onReport = (e) => reports.push(e);
            player.ensureContext();
            await player.context.resume();
            const chunk = Int16Array.from(samples);
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
        [schedule, chunk, jitter_ms, end_after_ms],
    )
    return result


def test_player_underruns_agree_with_the_playout_model(page: Page) -> None:
    jitter_ms = 80
    # 40 chunks of 100 ms, paced in real time, with two stalls: +300 ms before chunk 8 and
    # +250 ms more before chunk 20 (as a congested network would deliver them).
    schedule = [k * 100 + (300 if k >= 8 else 0) + (250 if k >= 20 else 0) for k in range(40)]
    sine = np.rint(8000 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000)).astype(int)
    # A browser whose audio thread is not scheduled (a loaded machine) really plays a longer
    # gap than the model predicts from the arrivals: a systematic error shows in every run, a
    # stall in one. So one of three runs must agree within 25 ms on every gap.
    misses: list[str] = []
    for _ in range(3):
        result = play_on_schedule(page, schedule, sine.tolist(), jitter_ms, end_after_ms=400)
        chunks = pd.DataFrame(
            {
                "event_id": 1,
                "t_ns": [a * 1e6 for a in result["arrivals"]],
                "duration_ms": 100.0,
            }
        )
        model = playout(chunks, jitter_buffer_ms=jitter_ms)
        reports = records(result["reports"])
        heard = player_playout(reports)

        assert model.underrun_count >= 2  # the two stalls, and any the machine's timers added
        assert heard.audio_ms == pytest.approx(4000, abs=1)  # every chunk played, none flushed
        start = next(r for r in reports if r["type"] == "playback_start")
        assert start["t_ns"] - chunks["t_ns"].iloc[0] >= jitter_ms * 1e6 * 0.9
        run = []
        if abs(heard.underrun_count - model.underrun_count) > 1:
            run.append(f"underruns: player {heard.underrun_count}, model {model.underrun_count}")
        for gap in model.underruns["gap_ms"]:
            nearest = min(heard.underruns["gap_ms"], key=lambda g: abs(g - gap))
            if abs(nearest - gap) > 25:
                run.append(f"gap: player {nearest:.1f} ms, model {gap:.1f} ms")
        if not run:
            return
        misses.append("; ".join(run))
    pytest.fail(f"no run agreed with the playout model: {misses}")


def test_the_end_report_lists_the_chunks_as_they_arrived(page: Page) -> None:
    jitter_ms = 80
    # 100 ms chunks in real time, the fourth 350 ms late: one underrun.
    schedule = [0, 100, 200, 650, 750, 850]
    # The turn must not end in the gap, whatever the machine's timers do: 1 s of quiet.
    result = play_on_schedule(page, schedule, [3000] * 1600, jitter_ms, end_after_ms=1000)
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


def test_flush_stops_playback_and_drops_the_rest_of_the_turn(page: Page) -> None:
    result = page.evaluate(
        """async () => {
            const player = new PcmPlayer({ jitterMs: 50 });
            const reports = [];
            player.onReport = (e) => reports.push(e);
            player.ensureContext();
            await player.context.resume();
            const chunk = new Int16Array(16000).fill(4000); // 1 s
            player.push(7, chunk);
            player.push(7, chunk);
            await new Promise((r) => setTimeout(r, 600));
            player.flush(7);
            player.push(7, chunk); // stale: the turn was interrupted
            await new Promise((r) => setTimeout(r, 200));
            return { reports, dropped: player.totals.dropped };
        }"""
    )
    end = next(r for r in result["reports"] if r["kind"] == "end")
    assert end["flushed"] is True
    assert 300 < end["played_ms"] < 1000  # cut ~550 ms in, not the 2 s queued
    assert result["dropped"] == 1
