"""The report of a scenario run: ``report.md`` (or ``report.html``), PNG figures, results.json.

The report is written for the person whose CI just went red: the pass/fail table first, then
every failed check with what was expected and what was seen, then per scenario what the agent
heard, said and called, with its conversation timeline, and finally latency, accuracy and
playout over all runs. Figures and numbers come from the shared metric tables
(``sagelab.metrics``), so they match ``bench pipeline`` and ``bench accuracy``. Each run's
timeline is saved beside the report (``timelines/<scenario>-<n>/``), so any figure can be
redrawn, or a run re-judged, later.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from sagelab.metrics import (
    accuracy_table,
    percentiles,
    playout,
    session_table,
    tool_call_table,
    turn_table,
)
from sagelab.metrics.plots import (
    LATENCY_LABELS,
    conversation_timeline,
    latency_cdf,
    save_figure,
    wer_per_utterance,
)
from sagelab.scenarios.suite import ScenarioResult, SuiteResult

Format = Literal["md", "html"]


@dataclass(frozen=True)
class _Block:
    kind: str  # h1 h2 h3 p table img code
    text: str = ""
    rows: tuple[tuple[str, ...], ...] = ()


class _Doc:
    """A few block types, rendered as Markdown or as a standalone HTML page."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(_Block(f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(_Block("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        cells = tuple(tuple(_cell(c) for c in r) for r in [header, *rows])
        self.blocks.append(_Block("table", rows=cells))

    def img(self, path: str, alt: str) -> None:
        self.blocks.append(_Block("img", alt, ((path,),)))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b.kind.startswith("h"):
                out.append("#" * int(b.kind[1]) + " " + b.text)
            elif b.kind == "p":
                out.append(b.text)
            elif b.kind == "img":
                out.append(f"![{b.text}]({b.rows[0][0]})")
            elif b.kind == "table":
                header, *body = b.rows
                lines = ["| " + " | ".join(_md(c) for c in header) + " |",
                         "|" + "---|" * len(header)]  # fmt: skip
                lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in body]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
            "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:14px}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
            "th{background:#f4f4f4}img{max-width:100%}.pass{color:#1a7f37}.fail{color:#cf222e}"
            "</style></head><body>",
        ]
        for b in self.blocks:
            if b.kind.startswith("h"):
                out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
            elif b.kind == "p":
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif b.kind == "img":
                src = html.escape(b.rows[0][0], quote=True)
                out.append(f'<p><img src="{src}" alt="{html.escape(b.text, quote=True)}"></p>')
            elif b.kind == "table":
                header, *body = b.rows
                out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header)
                           + "</tr>")  # fmt: skip
                for r in body:
                    out.append("<tr>" + "".join(f"<td>{_td(c)}</td>" for c in r) + "</tr>")
                out.append("</table>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
    return str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _inline_html(text: str) -> str:
    """The two bits of Markdown the report's paragraphs use: `code` and **bold**."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    out = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _td(text: str) -> str:
    if text.startswith("PASS"):
        return f'<span class="pass">{html.escape(text)}</span>'
    if text.startswith("FAIL"):
        return f'<span class="fail">{html.escape(text)}</span>'
    return html.escape(text)


def _short(text: str | None, n: int = 90) -> str:
    if not text:
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_key(result: ScenarioResult) -> str:
    return f"{result.name}-{result.repeat + 1}"


def write_report(
    suite: SuiteResult,
    out_dir: Path,
    *,
    fmt: Format = "md",
    command: str | None = None,
) -> Path:
    """Write the report, its figures, ``results.json`` and every run's timeline to
    ``out_dir``; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timelines = {run_key(r): r.run.timeline for r in suite.results}
    for key, timeline in timelines.items():
        timeline.save(out_dir / "timelines" / key)
    (out_dir / "results.json").write_text(
        json.dumps(suite.as_dict(), indent=2, default=str) + "\n", encoding="utf-8"
    )
    doc = _Doc()
    title = "sagelab scenario report"
    doc.h(1, title)
    when = dt.datetime.fromtimestamp(suite.started_at).strftime("%Y-%m-%d %H:%M")
    verdict = "PASSED" if suite.passed else "FAILED"
    summary = suite.as_dict()
    doc.p(
        f"**{verdict}**: {summary['runs'] - summary['failed_runs']} of {summary['runs']} runs "
        f"passed, {summary['checks'] - summary['failed_checks']} of {summary['checks']} checks. "
        f"Server `{suite.url}`, {when}, {suite.duration_s:.0f} s."
        + (f" Command: `{command}`." if command else "")
    )
    _summary_table(doc, suite)
    failures = suite.failures()
    if failures:
        doc.h(2, "Failures")
        rows = []
        for r in suite.results:
            if r.error:
                rows.append([run_key(r), "–", "run", "the session runs", r.error])
            for s in r.steps:
                rows += [[run_key(r), f"{s.index + 1}. {s.label}", c.name, c.expected, c.observed]
                         for c in s.checks if not c.passed]  # fmt: skip
        doc.table(["run", "step", "check", "expected", "observed"], rows)
    turns = turn_table(timelines) if timelines else pd.DataFrame()
    _latency_section(doc, turns, out_dir)
    _accuracy_section(doc, suite, out_dir)
    _playout_section(doc, suite, timelines)
    _scenario_sections(doc, suite, out_dir)
    path = out_dir / ("report.html" if fmt == "html" else "report.md")
    text = doc.html(title) if fmt == "html" else doc.markdown()
    path.write_text(text, encoding="utf-8")
    return path


def _summary_table(doc: _Doc, suite: SuiteResult) -> None:
    rows = []
    for r in suite.results:
        failed = sum(1 for c in r.checks if not c.passed)
        rows.append([
            r.name, r.repeat + 1, r.scenario.agent, "PASS" if r.passed else "FAIL",
            f"{len(r.checks) - failed}/{len(r.checks)}", f"{r.run.duration_s:.1f} s",
        ])  # fmt: skip
    doc.table(["scenario", "run", "agent", "result", "checks passed", "duration"], rows)


def _latency_section(doc: _Doc, turns: pd.DataFrame, out_dir: Path) -> None:
    columns = [c for c in LATENCY_LABELS if c in turns.columns and turns[c].notna().any()]
    if not columns:
        return
    doc.h(2, "Latency")
    doc.p(
        "Every agent turn of every run. Voice-to-voice runs from the end of the user's speech "
        "in the audio sent to the first audio of the reply received; stages are the server's "
        "own timings (see `sagelab.metrics.latency`)."
    )
    table = percentiles(turns, columns)
    doc.table(
        ["metric", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [[LATENCY_LABELS[c], int(table.loc[c, "count"]), table.loc[c, "p50"],
          table.loc[c, "p95"], table.loc[c, "p99"], table.loc[c, "max"]] for c in columns],
    )  # fmt: skip
    save_figure(latency_cdf(turns, columns, title="Latency by stage, all runs"),
                out_dir / "latency_cdf.png")  # fmt: skip
    doc.img("latency_cdf.png", "latency CDFs by stage")


def _accuracy_section(doc: _Doc, suite: SuiteResult, out_dir: Path) -> None:
    pairs = [
        (f"{run_key(r)} · step {s.index + 1}", s.reference, s.observation.heard)
        for r in suite.results
        for s in r.steps
        if s.reference and s.observation is not None and s.kind != "send_text"
    ]
    if not pairs:
        return
    table = accuracy_table(pairs)
    doc.h(2, "Transcription accuracy")
    doc.p(
        f"What the agent heard against what was said, per user utterance: pooled "
        f"WER {table.attrs['wer']:.1%}, CER {table.attrs['cer']:.1%} over {len(table)} "
        "utterances (normalised as in `sagelab.metrics.accuracy`)."
    )
    fig = wer_per_utterance(table, overall_wer=table.attrs["wer"])
    save_figure(fig, out_dir / "wer.png")
    doc.img("wer.png", "word error rate per utterance")


def _playout_section(doc: _Doc, suite: SuiteResult, timelines: dict[str, Any]) -> None:
    if not timelines:
        return
    sessions = session_table(timelines)
    doc.h(2, "Agent audio playout")
    doc.p(
        "An ideal player's view of the agent's audio (`sagelab.metrics.stutter`): a gap is "
        "the player running dry in the middle of a reply."
    )
    rows = []
    for _, s in sessions.iterrows():
        rows.append([s["session"], s["agent_turns"], s["audio_received_s"], s["underruns"],
                     f"{s['stutter_ratio']:.2%}" if math.isfinite(s["stutter_ratio"]) else "–",
                     s["interruptions"], s["tool_calls"], s["tool_errors"]])  # fmt: skip
    doc.table(
        ["run", "agent turns", "agent audio s", "underruns", "stutter", "interruptions",
         "tool calls", "tool errors"], rows,
    )  # fmt: skip


def _scenario_sections(doc: _Doc, suite: SuiteResult, out_dir: Path) -> None:
    doc.h(2, "Scenarios")
    seen: set[str] = set()
    for r in suite.results:
        first = r.name not in seen
        seen.add(r.name)
        doc.h(3, f"{r.name}, run {r.repeat + 1}: {'PASS' if r.passed else 'FAIL'}")
        if first and r.scenario.description:
            doc.p(r.scenario.description)
        rows = []
        for s in r.steps:
            obs = s.observation
            tools = ", ".join(
                f"{t.name}{' (error)' if t.is_error else ''}" for t in (obs.tools if obs else [])
            )
            failed = sum(1 for c in s.checks if not c.passed)
            rows.append([
                f"{s.index + 1}. {s.label}",
                _short(obs.heard if obs else None, 60),
                _short(obs.reply if obs else None),
                tools or "–",
                obs.latencies_ms.get("voice_to_voice") if obs else None,
                ("PASS" if not failed else "FAIL") + f" {len(s.checks) - failed}/{len(s.checks)}",
            ])  # fmt: skip
        doc.table(["step", "heard", "reply", "tools", "voice-to-voice ms", "checks"], rows)
        if not first:
            continue
        timeline = r.run.timeline
        turns = turn_table(timeline)
        if not len(turns):
            continue
        fig = conversation_timeline(
            turns, tool_call_table(timeline), playout(timeline).turns,
            title=f"{r.name}: conversation timeline",
        )  # fmt: skip
        name = f"timeline_{r.name}.png"
        save_figure(fig, out_dir / name)
        doc.img(name, f"{r.name} conversation timeline")
