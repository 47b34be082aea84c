"""The widgets in a real browser: JupyterLab headless, Debian's Chromium driven by Playwright,
a fake microphone that plays a real speech recording, and the bundled ``audio-sage`` agent.

The notebook ``01_conversation.ipynb`` is run as a user would (Run All), then the panel's
Record and Stop buttons are pressed, once over a long reply (a barge-in the server hears); what
the panel shows is checked in the page, what the player reported and the session recorded is
read from the same kernel. The barge-in test's screenshot is the documentation's
(``docs/notebook-panel.png``, copied from ``runs/test-artifacts/``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from jupyter_client import BlockingKernelClient
from nb_helpers import REPO, Lab
from playwright.sync_api import ConsoleMessage, Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from sagelab.audio import load_audio, save_wav, silence
from sagelab.metrics.accuracy import score
from sagelab.metrics.turns import STAGE_PARTS

pytestmark = [pytest.mark.timeout(240), pytest.mark.browser]

# What the fake microphone says: the demo's barge-in line ("Stop. Search for Berlin."), which
# makes audio-sage call its search_records tool; its words are in conversation.yaml.
MIC_TURN = "user/05_barge.wav"
# The question whose answer it cuts: audio-sage's longest reply (its help, about 15 s).
LONG_REPLY_QUESTION = "user/04_help.wav"


@dataclass
class Browser:
    """The page, a second client on its kernel, and what the fake microphone plays."""

    page: Page
    kernel: BlockingKernelClient
    mic_text: str
    mic_seconds: float  # the fake microphone's loop: 0.3 s silence, the utterance, 2 s silence
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def record_seconds(self) -> float:
        """A recording started 0.4 s into the loop's closing silence: 1.6 s of it, 0.3 s, the
        utterance, then 1.5 s of its closing silence (the next utterance is 0.8 s further on),
        enough for the agent to hear the turn end."""
        return self.mic_seconds + 1.0

    def kernel_json(self, expression: str) -> Any:
        """Evaluate ``expression`` in the notebook's kernel (a second client on it)."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        code = f"import json as _j; print(_j.dumps({expression}, default=str))"
        reply = self.kernel.execute_interactive(code, output_hook=hook, timeout=30)
        assert reply["content"]["status"] == "ok", "".join(out)
        return json.loads("".join(out))


def mic_recording(directory: Path) -> tuple[Path, str, float]:
    """The fake microphone's file: 16-bit PCM WAV of a demo line, padded with silence so the
    agent hears the end of the turn before Chromium loops the file."""
    script = yaml.safe_load((REPO / "data" / "demo" / "conversation.yaml").read_text())
    text = next(t["text"] for t in script["turns"] if t["audio"] == MIC_TURN)
    pcm = load_audio(REPO / "data" / "demo" / MIC_TURN)
    padded = np.concatenate([silence(300), pcm, silence(2000)])
    path = directory / "microphone.wav"
    save_wav(path, padded, 16_000)
    return path, text, padded.size / 16_000


# The fake device loops its file from wherever it happens to be. The page holds it open from
# the start (Chromium's fake device opens with a second or so of generated tones before the
# file plays) and watches its level, so a test can start recording at a known point of the loop.
WATCH_MIC = """async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    window.__sagelabMic = { stream, context };
    window.__sagelabMicLevel = () => {
        analyser.getFloatTimeDomainData(data);
        let sum = 0;
        for (const v of data) sum += v * v;
        return Math.sqrt(sum / data.length);
    };
}"""
MIC_MOMENT = """(moment) => new Promise((resolve) => {
    let loud = false, quietSince = null;
    const tick = () => {
        const level = window.__sagelabMicLevel(), now = performance.now();
        if (level > 0.01) {
            if (moment === "speaking") return resolve(now);
            loud = true;
            quietSince = null;
        } else if (loud) {
            quietSince = quietSince ?? now;
            if (now - quietSince > 400) return resolve(now);
        }
        setTimeout(tick, 10);
    };
    tick();
})"""


def mic_moment(page: Page, moment: str) -> None:
    """Wait until the fake microphone starts speaking (``speaking``) or has just finished an
    utterance (``pause``: 400 ms of silence after speech)."""
    page.evaluate(MIC_MOMENT, moment)


def kernel_idle(page: Page) -> bool:
    return bool(
        page.evaluate(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session"
            " && w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }"
        )
    )


@pytest.fixture(scope="module")
def browser(
    jupyter_lab: Lab, chromium: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    wav, text, seconds = mic_recording(tmp_path_factory.mktemp("mic"))
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=[
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",  # replays start without a wait
            ],
        )
        # Tall enough for a screenshot of the whole panel after several tool calls.
        context = chrome.new_context(viewport={"width": 1280, "height": 1600})
        context.grant_permissions(["microphone"], origin=jupyter_lab.url)
        page = context.new_page()
        errors: list[str] = []
        warnings: list[str] = []

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                errors.append(f"console: {msg.text}")
            elif msg.type == "warning":
                warnings.append(msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.goto(jupyter_lab.page_url("notebooks/01_conversation.ipynb"))
        page.wait_for_function(
            "() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
            timeout=60_000,
        )
        deadline = time.monotonic() + 60
        while not kernel_idle(page):
            assert time.monotonic() < deadline, "the notebook's kernel did not start"
            time.sleep(0.2)
        # A real click first: browsers play sound only in pages the user has interacted with.
        page.locator(".jp-Notebook .jp-Cell").first.click()
        # Chromium's fake capture device opens with a second or so of generated tones before
        # it plays the file: open it once now (held for the whole test, as an app holding the
        # microphone would) so every recording below hears the speech file.
        page.evaluate(WATCH_MIC)
        time.sleep(2.0)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_selector(".jp-OutputArea-output >> text=saved to ", timeout=120_000)

        connection = jupyter_lab.kernel_connection_files()[-1]
        kernel = BlockingKernelClient(connection_file=str(connection))
        kernel.load_connection_file()
        kernel.start_channels()
        try:
            yield Browser(page, kernel, text, seconds, errors, warnings)
        finally:
            kernel.stop_channels()
            chrome.close()


def lines(page: Page, role: str) -> list[str]:
    texts = page.locator(f".sagelab-panel .sagelab-{role} .sagelab-text").all_text_contents()
    return [t.strip() for t in texts]


def words(text: str) -> list[str]:
    return text.split()


def wait_for_lines(browser: Browser, role: str, more_than: int, timeout_s: float) -> None:
    """Wait until the transcript has more than ``more_than`` lines of ``role``; on a timeout,
    say what the panel shows and the last events the session recorded."""
    try:
        browser.page.wait_for_function(
            "([role, n]) => document.querySelectorAll(`.sagelab-panel .sagelab-${role}`).length"
            " > n",
            arg=[role, more_than],
            timeout=timeout_s * 1000,
        )
    except PlaywrightTimeout:
        state = browser.kernel_json(
            "{'transcript': panel.transcript, 'error': panel.error,"
            " 'recent': [(e.direction, e.type, e.event_id) for e in panel.timeline.events"
            " if e.type not in ('audio', 'user_audio_chunk')][-30:]}"
        )
        raise AssertionError(f"no new {role} line in {timeout_s} s: {state}") from None


def test_speaking_over_a_long_reply_cuts_it_and_the_next_turn_runs_a_tool(
    browser: Browser, artifacts: Path
) -> None:
    """A barge-in the server hears: the microphone speaks while the agent's longest reply is
    playing, the server's VAD cuts the reply (``interruption``), the transcript keeps the words
    the player really played and strikes out the rest, and the words spoken over the reply are
    the next turn, which runs a server tool whose parameters and result the panel shows.

    The fake microphone loops 0.3 s of silence, the barge-in line and 2 s of silence. Recording
    starts just after one of its utterances ends while the reply is playing: the next utterance
    starts 1.9 s later, well inside a reply of about 15 s."""
    page = browser.page
    panel = page.locator(".sagelab-panel")
    panel.scroll_into_view_if_needed()
    users_before = len(lines(page, "user"))
    agents_before = len(lines(page, "agent"))
    run_new_cell(
        page, f"_ = panel.send_recording(DATA / 'demo' / {LONG_REPLY_QUESTION!r}, wait=False)"
    )
    page.wait_for_function(
        "n => document.querySelectorAll('.sagelab-panel .sagelab-agent').length > n",
        arg=agents_before,
        timeout=90_000,
    )
    page.wait_for_function(
        "() => document.querySelector('.sagelab-panel .sagelab-status').textContent"
        " === 'agent speaking'",
        timeout=30_000,
    )
    mic_moment(page, "pause")
    panel.get_by_role("button", name="● Record").click()
    panel.get_by_role("button", name="■ Stop").wait_for(timeout=10_000)
    mic_moment(page, "speaking")
    mic_moment(page, "pause")
    time.sleep(0.9)  # 1.3 s of silence after the words: the server ends a turn by 800 ms
    panel.get_by_role("button", name="■ Stop").click()

    # The server heard the microphone and cut the reply: an ``interruption`` for that turn,
    # received while the microphone's words were being sent (not before: no button did it).
    cut_line = panel.locator(".sagelab-agent").nth(agents_before)
    turn = int(cut_line.get_attribute("data-event-id") or 0)
    cut_line.locator(".sagelab-unheard").wait_for(timeout=60_000)
    kernel = browser.kernel_json(
        "{'cuts': [e.t_ns for e in panel.timeline.of_type('interruption')"
        f" if e.event_id == {turn} and e.direction == 'recv'],"
        " 'speech': [(e.data['speech_start_ns'], e.data['speech_end_ns'])"
        " for e in panel.timeline.of_type('user_speech')"
        " if e.data.get('source') == 'microphone'],"
        "}"
    )
    assert kernel["cuts"], f"the server sent no interruption for turn {turn}"
    assert kernel["speech"], "the panel saw no speech from the microphone"
    # (The segmenter may split "Stop. Search for Berlin." in two: the cut falls in the first.)
    started = [s for s, _ in kernel["speech"] if s <= kernel["cuts"][0]]
    assert started, kernel
    start_ns, end_ns = started[-1], max(e for _, e in kernel["speech"])
    assert start_ns < kernel["cuts"][0] < end_ns, kernel
    assert kernel["cuts"][0] - start_ns < 2_000_000_000, kernel  # the VAD's reaction

    # The transcript: the reply's heard words, the rest struck out, the time it played.
    (played_ms,) = wait_kernel(
        browser,
        f"[e['played_ms'] for e in panel.player_events if e['event_id'] == {turn}"
        " and e['type'] == 'playback_end' and e['flushed']]",
    )
    full = words(cut_line.locator(".sagelab-text").text_content() or "")
    heard = words(cut_line.locator(".sagelab-heard").text_content() or "")
    unheard = words(cut_line.locator(".sagelab-unheard").text_content() or "")
    assert 1_000 < played_ms < 12_000, played_ms  # cut mid-reply (it lasts about 15 s)
    assert 0 < len(heard) < len(full) and full[: len(heard)] == heard, (heard, full)
    assert heard + unheard == full
    # As many words as were spoken in that time, not the share of the audio received, which
    # stopped at the cut: Piper speaks between one and four words a second.
    assert played_ms / 1000 - 1 <= len(heard) <= 4 * played_ms / 1000 + 1, (played_ms, heard)
    # The tag gets its time when the panel has the player's report (it may redraw just after).
    cut_line.locator(".sagelab-tag", has_text="after").wait_for(timeout=10_000)
    tag = cut_line.locator(".sagelab-tag").text_content() or ""
    assert tag == f"interrupted after {played_ms / 1000:.1f} s"
    # The server was told what was heard; the Turns table flags the turn, hover = heard words.
    told = wait_kernel(
        browser,
        f"[dict(e.data) for e in panel.timeline.of_type('internal_sagelab_heard')"
        f" if e.event_id == {turn}]",
    )[0]
    assert told["played_ms"] == pytest.approx(played_ms, abs=1)
    assert told["text"] == " ".join(heard)
    cut_flag = panel_row(page, turn).locator(".sagelab-cut")
    cut_flag.wait_for(timeout=15_000)
    assert " ".join(heard) in (cut_flag.get_attribute("title") or "")

    # What was said over the reply is the next turn: a search that runs the server's tool.
    wait_for_lines(browser, "agent", agents_before + 1, 90)
    said = lines(page, "user")[users_before + 1]
    assert score(browser.mic_text, said).wer <= 0.25, (browser.mic_text, said)
    answer = lines(page, "agent")[agents_before + 1]
    assert "Lena Vogel" in answer
    tool = panel.locator(".sagelab-tools tbody tr", has_text='"berlin"')
    assert tool.count() == 1
    cells = [c.strip() for c in tool.locator("td").all_text_contents()]
    assert cells[0] == "search_records" and json.loads(cells[1]) == {"query": "berlin"}
    assert '"name": "Lena Vogel"' in cells[2] and cells[3] == "ok"
    # Its turn: the tool flagged, and the stage bar has the parts of the wait. (The tool has a
    # share only when it ran after the end of turn: audio-sage drafts its reply during the
    # pause, and a read-only search done then costs the user no wait.)
    answer_turn = int(
        panel.locator(".sagelab-agent").nth(agents_before + 1).get_attribute("data-event-id") or 0
    )
    row = panel_row(page, answer_turn)
    row.locator(".sagelab-flag", has_text="search_records").wait_for(timeout=15_000)
    bar = row.locator(".sagelab-stagebar")
    bar.locator(".sagelab-stage").first.wait_for(timeout=15_000)
    parts = bar.locator(".sagelab-stage").evaluate_all("els => els.map(e => e.dataset.part)")
    assert {"endpointing", "tts"} <= set(parts) <= set(STAGE_PARTS), (
        parts,
        browser.kernel_json(f"[t for t in panel.turns if t['event_id'] == {answer_turn}]"),
    )
    # Whether the reply was drafted in the pause depends on the machine's speed; the row says
    # so exactly when the server reported it (its draft stage), with how far ahead.
    drafted = browser.kernel_json(
        f"[t['drafted_ms'] for t in panel.turns if t['event_id'] == {answer_turn}][0]"
    )
    flag = row.locator(".sagelab-drafted")
    if drafted is None:
        assert flag.count() == 0
    else:
        flag.wait_for(timeout=10_000)
        assert flag.text_content() == "drafted"
        ms = math.floor(drafted + 0.5)  # as the page rounds (Math.round)
        assert (flag.get_attribute("title") or "").startswith(f"{ms} ms ahead"), drafted

    page.wait_for_function(
        "() => document.querySelector('.sagelab-panel .sagelab-status').textContent"
        " === 'listening'",
        timeout=30_000,
    )
    # The documentation's screenshot (docs/notebook-panel.png).
    panel.screenshot(path=str(artifacts / "notebook-panel.png"))
    assert browser.errors == []


def test_talking_through_the_microphone(browser: Browser, artifacts: Path) -> None:
    page = browser.page
    panel = page.locator(".sagelab-panel")
    panel.scroll_into_view_if_needed()
    assert panel.locator(".sagelab-status").text_content() in ("listening", "agent speaking")
    users_before = len(lines(page, "user"))
    agents_before = len(lines(page, "agent"))
    # Run All sent a recording already: its turn is on screen, answered.
    assert users_before >= 1 and agents_before >= 2
    mic_before_s = browser.kernel_json("panel.mic.audio().size / 16000")  # earlier recordings

    # From just after the fake microphone's utterance: the recording holds the rest of its
    # silence, the whole utterance and a second of silence after it, then stops.
    mic_moment(page, "pause")
    panel.get_by_role("button", name="● Record").click()
    page.wait_for_function(
        "() => document.querySelector('.sagelab-panel .sagelab-record')"
        ".textContent.includes('Stop')"
    )
    time.sleep(browser.record_seconds)
    panel.get_by_role("button", name="■ Stop").click()

    # The transcript shows what the microphone said, then the agent's answer (generous: on a
    # machine shared with other work, speech-to-text can take a while).
    page.wait_for_function(
        f"() => document.querySelectorAll('.sagelab-panel .sagelab-user').length > {users_before}",
        timeout=90_000,
    )
    page.wait_for_function(
        f"() => document.querySelectorAll('.sagelab-panel .sagelab-agent').length"
        f" > {agents_before}",
        timeout=30_000,
    )
    heard = lines(page, "user")[users_before]
    accuracy = score(browser.mic_text, heard)
    assert accuracy.wer <= 0.2, f"the panel shows {heard!r} for {browser.mic_text!r}"
    reply = lines(page, "agent")[agents_before]
    assert reply, "the agent's reply is not shown"

    # Mid-conversation: the agent is talking.
    page.wait_for_function(
        "() => document.querySelector('.sagelab-panel .sagelab-status').textContent"
        " === 'agent speaking'",
        timeout=15_000,
    )
    time.sleep(0.5)  # let the waveform show a stretch of speech
    panel.screenshot(path=str(artifacts / "notebook-panel-talking.png"))

    # Kernel side: the reply's turn, and what the browser's player reported for it.
    turn = browser.kernel_json(
        "[l['event_id'] for l in panel.transcript if l['role'] == 'agent'][-1]"
    )
    received = (
        f"sum(e.data['duration_s'] for e in panel.timeline.of_type('audio')"
        f" if e.event_id == {turn} and not e.data.get('stale'))"
    )
    # A turn's end is reported once its queue has been quiet for a second; a chunk that comes
    # later still (the rest of the reply synthesised slowly on a loaded machine) reopens it, as
    # an underrun, and it ends again: the last end report covers the whole turn.
    deadline = time.monotonic() + 60
    while True:
        events = browser.kernel_json(f"[e for e in panel.player_events if e['event_id'] == {turn}]")
        ends = [e for e in events if e["type"] == "playback_end"]
        received_s = browser.kernel_json(received)
        if ends and ends[-1]["played_ms"] == pytest.approx(received_s * 1000, rel=0.02):
            break
        assert time.monotonic() < deadline, (
            f"the player never played all {received_s} s of turn {turn}: {events}"
        )
        time.sleep(0.5)
    start = next(e for e in events if e["type"] == "playback_start")
    end = ends[-1]
    assert received_s > 1.0
    # All of the reply was played (above), and sound really went through the page's audio
    # graph (Playwright mutes the output, so the player's AnalyserNode is the witness).
    assert not end["flushed"]
    assert end["rms_max"] > 0.01
    assert start["t_ns"] is not None and end["t_ns"] > start["t_ns"]

    mic = browser.kernel_json(
        "{'rate': panel.mic.context_rate, 'missing': panel.mic.missing_chunks,"
        " 'seconds': panel.mic.audio().size / 16000}"
    )
    assert mic["rate"] > 0 and mic["missing"] == 0
    # As long as the clicks were apart: at least what was asked, and more when a loaded machine
    # delays the Stop click (1.2 s late once under make test).
    recorded = mic["seconds"] - mic_before_s
    assert browser.record_seconds - 1.0 <= recorded <= browser.record_seconds + 2.5, recorded

    # Latency of the microphone turn, measured from the end of speech as sent.
    rows = browser.kernel_json("panel.turns")
    row = next(r for r in rows if r["event_id"] == turn)
    assert row["voice_to_voice_ms"] is not None and 0 < row["voice_to_voice_ms"] < 10_000
    assert row["heard_ms"] is not None and row["heard_ms"] > row["voice_to_voice_ms"]

    # What the player heard agrees with the playout model on the chunks as the player got them
    # (after Jupyter's widget messages, which add their own delay and jitter). The model on the
    # network arrivals ("model") is kept in the message: delivered minus model is what the
    # notebook's message path added, not a fault of the player.
    stutter = browser.kernel_json("panel.stutter()")
    player, delivered = stutter["player"], stutter["delivered"]
    assert delivered["turns"] == player["turns"] and delivered["chunks_left_off"] == 0, stutter
    assert abs(player["underruns"] - delivered["underruns"]) <= 1, (
        f"player {player['underruns']} underruns, the model on what it received "
        f"{delivered['underruns']} (on the network arrivals {stutter['model']['underruns']}): "
        f"{stutter}"
    )
    assert not math.isnan(stutter["player"]["audio_ms"])

    assert browser.errors == []


def test_transcripts_are_shown_as_text_never_as_html(browser: Browser) -> None:
    page = browser.page
    markup = '<img src=x onerror="window.__sagelab_pwned = 1"><b>bold</b>'
    browser.kernel_json(f"panel.say({markup!r})")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.sagelab-panel .sagelab-user .sagelab-text')]"
        ".some(e => e.textContent.includes('<img src=x'))",
        timeout=15_000,
    )
    assert markup in lines(page, "user")
    assert page.locator(".sagelab-panel img, .sagelab-panel b").count() == 0
    time.sleep(0.3)  # an injected onerror would have fired by now
    assert page.evaluate("() => window.__sagelab_pwned === undefined")
    assert browser.errors == []


def run_new_cell(page: Page, code: str) -> None:
    """Append a cell to the open notebook and run it, as a user typing it would."""
    page.evaluate(
        """async (code) => {
            const app = window.jupyterapp;
            const notebook = app.shell.currentWidget.content;
            notebook.activeCellIndex = notebook.widgets.length - 1;
            await app.commands.execute("notebook:insert-cell-below");
            notebook.activeCell.model.sharedModel.setSource(code);
            await app.commands.execute("notebook:run-cell");
        }""",
        code,
    )


def test_mic_recorder_resamples_a_native_rate_capture(browser: Browser) -> None:
    page = browser.page
    run_new_cell(
        page,
        "from sagelab.notebook import MicRecorder\n"
        "mic = MicRecorder(chunk_ms=50, force_native_rate=True)\nmic",
    )
    widget = page.locator(".sagelab-mic").last
    widget.wait_for(timeout=30_000)
    mic_moment(page, "speaking")
    started = time.monotonic()  # the recording lies within these two instants
    widget.get_by_role("button", name="● Record").click()
    widget.get_by_role("button", name="■ Stop").wait_for(timeout=10_000)
    time.sleep(2.0)
    widget.get_by_role("button", name="■ Stop").click()
    widget.get_by_role("button", name="● Record").wait_for(timeout=10_000)
    clicked_s = time.monotonic() - started
    deadline = time.monotonic() + 15
    while True:
        got = browser.kernel_json(
            "{'recording': mic.recording, 'rate': mic.input.context_rate,"
            " 'missing': mic.input.missing_chunks,"
            " 'sizes': sorted({c.size for c in mic.input.chunks}),"
            " 'seconds': mic.duration_s, 'error': mic.error,"
            " 'dbfs': __import__('sagelab.audio').audio.rms_dbfs(mic.audio())}"
        )
        if not got["recording"] and got["seconds"] > 0:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.3)
    assert got["error"] == ""
    assert got["rate"] > 16_000  # captured at the device's rate, resampled in the worklet
    assert got["missing"] == 0
    assert got["sizes"][-1] == 800  # 50 ms chunks at 16 kHz (the last one may be shorter)
    # About the two seconds between the clicks; on a loaded machine the clicks themselves take
    # longer, so the bound above is the time from pressing Record to seeing Stop take effect.
    assert 1.5 <= got["seconds"] <= clicked_s + 0.2, (got["seconds"], clicked_s)
    assert got["dbfs"] > -45, (got, clicked_s)  # the fake microphone's speech, not silence
    assert browser.errors == []


def test_audio_player_plays_a_clip_and_reports_it(browser: Browser) -> None:
    page = browser.page
    run_new_cell(
        page, "from sagelab.notebook import AudioPlayer\nplayer = AudioPlayer(jitter_ms=60)\nplayer"
    )
    page.locator(".sagelab-player").last.wait_for(timeout=30_000)
    run_new_cell(page, "turn = player.play(DATA / 'demo' / 'user' / '04_help.wav')")
    seconds = load_audio(REPO / "data" / "demo" / "user" / "04_help.wav").size / 16_000
    deadline = time.monotonic() + 30
    while True:
        events = browser.kernel_json("player.events")
        if any(e["type"] == "playback_end" for e in events):
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.3)
    end = next(e for e in events if e["type"] == "playback_end")
    assert end["played_ms"] == pytest.approx(seconds * 1000, abs=1)
    assert end["rms_max"] > 0.01 and not end["flushed"]
    assert browser.kernel_json("player.report()")["underruns"] == 0
    assert browser.errors == []


def panel_row(page: Page, event_id: int) -> Locator:
    return page.locator(f".sagelab-panel tbody tr[data-event-id='{event_id}']")


def wait_kernel(browser: Browser, expression: str, timeout: float = 30.0) -> Any:
    """Poll ``expression`` in the kernel until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.kernel_json(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.3)


def test_an_interrupted_reply_is_marked_with_what_was_heard_and_turns_show_their_stages(
    browser: Browser, artifacts: Path
) -> None:
    """A reply cut by the Interrupt button: the transcript strikes out what was not heard (as
    the browser's player reports it), the Turns table flags it, and the server is told how much
    was played, which ConvAI alone cannot say. Turns are numbered from 1 after the greeting and
    each answered turn has its stage bar."""
    page = browser.page
    panel = page.locator(".sagelab-panel")
    agents_before = len(lines(page, "agent"))
    # The longest answer audio-sage gives (a record read out, about six seconds), cut a second
    # after it starts.
    question = "DATA / 'demo' / 'user' / '02_get.wav'"
    run_new_cell(page, f"_ = panel.send_recording({question}, wait=False)")
    page.wait_for_function(
        "() => document.querySelectorAll('.sagelab-panel .sagelab-agent').length"
        f" > {agents_before}",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => document.querySelector('.sagelab-panel .sagelab-status').textContent"
        " === 'agent speaking'",
        timeout=30_000,
    )
    time.sleep(1.0)
    panel.get_by_role("button", name="Interrupt").click()

    cut_line = panel.locator(".sagelab-agent").nth(agents_before)
    # "after N s" once the browser's player has reported how much it played.
    page.wait_for_function(
        "n => { const tag = document.querySelectorAll('.sagelab-panel .sagelab-agent')[n]"
        ".querySelector('.sagelab-tag'); return tag && tag.textContent.includes('after'); }",
        arg=agents_before,
        timeout=60_000,
    )
    # The words heard, once the reply's audio has stopped arriving (the server streams it in
    # real time and, told nothing by ConvAI itself, keeps sending after a local Interrupt).
    cut_line.locator(".sagelab-unheard").wait_for(timeout=30_000)
    turn = int(cut_line.get_attribute("data-event-id") or 0)
    tag = cut_line.locator(".sagelab-tag").text_content() or ""
    assert tag.startswith("interrupted after ")
    heard = (cut_line.locator(".sagelab-heard").text_content() or "").strip()
    unheard = (cut_line.locator(".sagelab-unheard").text_content() or "").strip()
    assert unheard, "nothing of the cut reply is struck out"
    full = (cut_line.locator(".sagelab-text").text_content() or "").strip()
    assert full.startswith(heard) and len(heard) < len(full)
    # The Turns table flags it; the kernel told the server what the player really played.
    panel_row(page, turn).locator(".sagelab-cut").wait_for(timeout=15_000)
    told = wait_kernel(
        browser,
        f"[dict(e.data) for e in panel.timeline.of_type('internal_sagelab_heard')"
        f" if e.event_id == {turn}]",
    )[0]
    received_ms = browser.kernel_json(
        f"1000 * sum(e.data['duration_s'] for e in panel.timeline.of_type('audio')"
        f" if e.event_id == {turn})"
    )
    assert 500 < told["played_ms"] < received_ms
    assert told["text"] == heard

    # Turns numbered as a person counts them; the greeting named; stage bars on answers.
    numbers = panel.locator(".sagelab-turn-number").all_text_contents()
    assert numbers[0] == "greeting"
    assert numbers[1:] == [str(k) for k in range(1, len(numbers))]
    bar = panel_row(page, turn).locator(".sagelab-stagebar")
    parts = bar.locator(".sagelab-stage").evaluate_all("els => els.map(e => e.dataset.part)")
    # STT has no part when speculation hid all of it (0 ms left after the end of turn).
    assert (
        {"endpointing", "tts"}
        <= set(parts)
        <= {"endpointing", "stt", "brain", "tool", "tts", "network"}
    )
    assert "endpointing" in (bar.get_attribute("title") or "")
    assert panel.locator(".sagelab-legend-item").count() == 6
    headers = panel.locator("thead th[title]").evaluate_all("els => els.map(e => e.title)")
    assert any("end of your speech" in h for h in headers)

    time.sleep(1.5)  # the answer plays on: the screenshot shows a live conversation
    panel.screenshot(path=str(artifacts / "notebook-panel-interrupt-button.png"))
    assert browser.errors == []


def test_a_turn_can_be_heard_again_and_downloaded(browser: Browser) -> None:
    page = browser.page
    panel = page.locator(".sagelab-panel")
    rows = browser.kernel_json("[r for r in panel.turns if r['kind'] == 'speech']")
    first = rows[0]
    row = panel_row(page, first["event_id"])
    row.locator(".sagelab-replay[data-side='user']").click()
    audio = panel.locator(".sagelab-clip audio[data-side='user']")
    audio.wait_for(timeout=15_000)
    page.wait_for_function(
        "() => { const a = document.querySelector('.sagelab-clip audio');"
        " return a && a.readyState >= 1 && a.currentTime > 0.2; }",
        timeout=15_000,
    )
    seconds = audio.evaluate("a => a.duration")
    assert seconds > 1.0  # the user's question, as sent
    link = panel.locator(".sagelab-clip a[download]")
    assert (link.get_attribute("download") or "").endswith("-user.wav")
    assert (link.get_attribute("href") or "").startswith("blob:")

    row.locator(".sagelab-replay[data-side='agent']").click()
    panel.locator(".sagelab-clip audio[data-side='agent']").wait_for(timeout=15_000)
    page.wait_for_function(
        "() => { const a = document.querySelector('.sagelab-clip audio');"
        " return a && a.dataset.side === 'agent' && a.currentTime > 0.2; }",
        timeout=15_000,
    )
    agent_s = panel.locator(".sagelab-clip audio").evaluate("a => a.duration")
    received_s = browser.kernel_json(
        f"sum(e.data['duration_s'] for e in panel.timeline.of_type('audio')"
        f" if e.event_id == {first['event_id']} and not e.data.get('stale'))"
    )
    assert agent_s == pytest.approx(received_s, abs=0.05)
    assert browser.errors == []


def test_a_server_tools_parameters_and_result_are_shown(browser: Browser) -> None:
    page = browser.page
    row = page.locator(".sagelab-panel tr", has_text="search_records").first
    parameters = row.locator(".sagelab-tool-parameters").text_content() or ""
    assert '"query"' in parameters and "oslo" in parameters.lower()
    assert "Anna Berg" in (row.locator("td").nth(2).text_content() or "")
