"""The widgets' audio code in a real browser page, without Jupyter: the microphone worklet's
resampler, and the player's underrun reports against ``sagelab.metrics``' playout model on the
same chunk arrivals (stutter injected on a known schedule)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Page, sync_playwright

from sagelab.metrics import player_playout, playout
from sagelab.notebook.assets import source
from sagelab.notebook.messages import ClockSync, parse_player_events

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


def test_player_underruns_agree_with_the_playout_model(page: Page) -> None:
    jitter_ms = 80
    # 40 chunks of 100 ms, paced in real time, with two stalls: +300 ms before chunk 8 and
    # +250 ms more before chunk 20 (as a congested network would deliver them).
    schedule = [k * 100 + (300 if k >= 8 else 0) + (250 if k >= 20 else 0) for k in range(40)]
    result = page.evaluate(
        """async ([schedule, jitterMs]) => {
            const player = new PcmPlayer({ jitterMs, endAfterMs: 400 });
            const reports = [];
            player.onReport = (e) => reports.push(e);
            player.ensureContext();
            await player.context.resume();
            const chunk = new Int16Array(1600);
            for (let i = 0; i < chunk.length; i++) {
                chunk[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 16000));
            }
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
            return { arrivals, reports };
        }""",
        [schedule, jitter_ms],
    )
    chunks = pd.DataFrame(
        {
            "event_id": 1,
            "t_ns": [a * 1e6 for a in result["arrivals"]],
            "duration_ms": 100.0,
        }
    )
    model = playout(chunks, jitter_buffer_ms=jitter_ms)
    clock = ClockSync()
    clock.add(0, 0.0, 0)  # the page's clock is the timeline's clock here
    reports = [e.record() for e in parse_player_events({"events": result["reports"]}, clock)]
    heard = player_playout(reports)

    assert model.underrun_count >= 2  # the two stalls, and any the machine's timers added
    assert abs(heard.underrun_count - model.underrun_count) <= 1
    for gap in model.underruns["gap_ms"]:
        nearest = min(heard.underruns["gap_ms"], key=lambda g: abs(g - gap))
        assert nearest == pytest.approx(gap, abs=25)
    assert heard.audio_ms == pytest.approx(4000, abs=1)  # every chunk played, none flushed
    start = next(r for r in reports if r["type"] == "playback_start")
    assert start["t_ns"] - chunks["t_ns"].iloc[0] >= jitter_ms * 1e6 * 0.9


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
