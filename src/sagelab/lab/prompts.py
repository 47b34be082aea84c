"""The prompt lab: one scenario under several prompt variants, N runs each, compared in numbers.

Each variant becomes an agent of its own in an agents file written for the run (the base
agent's copy with the variant's prompt, greeting, brain options or tools), all served by one
bundled server in its own process. Runs alternate between variants (A, B, A, B, ...) so that
a change in the machine's load during the experiment falls on every variant alike, instead of
looking like the effect of a prompt.

Every reply becomes one row of ``LabResult.replies``: its text and length, time to first audio,
the tool calls made and whether they succeeded, each reply check and the scenario's own checks.
``LabResult.summary`` is one row per variant; ``plot_lab`` draws the distributions.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sagelab.lab.variants import LabSpec, Variant
from sagelab.scenarios.serverconf import STORE_NAME, write_run_config
from sagelab.scenarios.suite import ScenarioResult, run_suite

__all__ = ["LabResult", "lab_agents_file", "run_lab", "run_lab_on", "summarize"]


def variant_agent_id(base: str, variant: Variant) -> str:
    return f"{base}.{variant.name}"


def lab_agents_file(spec: LabSpec, config: Path | None, run_dir: Path) -> dict[str, str]:
    """Write ``run_dir/agents.yaml`` with one agent per variant; returns variant → agent id."""
    path = write_run_config(config, [spec.base_agent], run_dir)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    (base,) = raw["agents"]
    agents, ids = [], {}
    for variant in spec.variants:
        agent = {**base, "id": variant_agent_id(base["id"], variant)}
        agent["name"] = f"{base.get('name') or base['id']} ({variant.name})"
        if variant.prompt is not None:
            agent["prompt"] = variant.prompt
        if variant.first_message is not None:
            agent["first_message"] = variant.first_message
        if variant.tools is not None:
            unknown = set(variant.tools) - {t["name"] for t in base.get("tools", [])}
            if unknown:
                raise ValueError(
                    f"variant {variant.name!r} keeps tools the agent {base['id']!r} does not "
                    f"have: {', '.join(sorted(unknown))}"
                )
            agent["tools"] = [t for t in base.get("tools", []) if t["name"] in variant.tools]
        options = dict(base.get("options") or {})
        if variant.brain_options:
            options["brain_options"] = {
                **(options.get("brain_options") or {}),
                **variant.brain_options,
            }
        tools = options.get("server_tools")
        if isinstance(tools, dict) and "database" in tools:  # each variant its own fresh copy
            options["server_tools"] = {**tools, "database": str(run_dir / f"{agent['id']}.sqlite3")}
        agent["options"] = options
        agents.append(agent)
        ids[variant.name] = agent["id"]
    raw["agents"] = agents
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return ids


@dataclass
class LabRun:
    variant: str
    run: int
    result: ScenarioResult


@dataclass
class LabResult:
    spec: LabSpec
    runs: list[LabRun] = field(default_factory=list)
    url: str = ""
    duration_s: float = 0.0

    @property
    def replies(self) -> pd.DataFrame:
        """One row per user turn of every run: what the agent said and how it measured."""
        return pd.DataFrame([row for run in self.runs for row in _rows(self.spec, run)])

    def summary(self) -> pd.DataFrame:
        return summarize(self.replies)


_CHECK_PREFIX = "check_"


def _rows(spec: LabSpec, lab_run: LabRun) -> list[dict[str, Any]]:
    variant = next(v for v in spec.variants if v.name == lab_run.variant)
    checks = spec.checks_for(variant)
    rows = []
    for step in lab_run.result.steps:
        obs = step.observation
        reply = obs.reply if obs is not None else ""
        calls = obs.tools if obs is not None else []
        row: dict[str, Any] = {
            "variant": lab_run.variant,
            "run": lab_run.run + 1,
            "step": step.index + 1,
            "turn": step.label,
            "reply": reply,
            "reply_words": len(reply.split()),
            "reply_chars": len(reply),
            "time_to_first_audio_ms": (obs.latencies_ms.get("voice_to_voice", math.nan))
            if obs is not None
            else math.nan,
            "brain_ms": obs.latencies_ms.get("brain", math.nan) if obs is not None else math.nan,
            "tool_calls": len(calls),
            "tools": ", ".join(c.name for c in calls),
            "tool_errors": sum(1 for c in calls if c.is_error),
            "banned_used": ", ".join(checks.banned_used(reply)),
            "scenario_checks_passed": step.passed,
            "error": step.error or lab_run.result.error,
        }
        for name, ok in checks.evaluate(reply).items():
            row[_CHECK_PREFIX + name] = ok
        rows.append(row)
    return rows


def summarize(replies: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: reply length, time to first audio, tools, check pass rates.

    ``tool_call_rate`` is the share of turns with at least one call; ``tool_validity`` the
    share of calls that the tool accepted and ran (NaN when there were none).
    """
    if not len(replies):
        return pd.DataFrame()
    out = []
    check_cols = [c for c in replies.columns if c.startswith(_CHECK_PREFIX)]
    for variant, rows in replies.groupby("variant", sort=False):
        ttfa = rows["time_to_first_audio_ms"].astype(float)
        calls = int(rows["tool_calls"].sum())
        summary: dict[str, Any] = {
            "variant": variant,
            "replies": len(rows),
            "runs": rows["run"].nunique(),
            "words_mean": rows["reply_words"].mean(),
            "words_sd": rows["reply_words"].std(ddof=1),
            "words_p50": rows["reply_words"].median(),
            "ttfa_p50_ms": ttfa.quantile(0.5),
            "ttfa_p95_ms": ttfa.quantile(0.95),
            "tool_call_rate": (rows["tool_calls"] > 0).mean(),
            "tool_validity": (1 - rows["tool_errors"].sum() / calls) if calls else math.nan,
            "scenario_pass_rate": rows["scenario_checks_passed"].mean(),
            "errors": int(rows["error"].notna().sum()),
        }
        for col in check_cols:
            verdicts = rows[col].dropna()
            summary[col.removeprefix(_CHECK_PREFIX) + "_rate"] = (
                verdicts.astype(bool).mean() if len(verdicts) else math.nan
            )
        out.append(summary)
    return pd.DataFrame(out).set_index("variant")


async def run_lab_on(
    spec: LabSpec,
    url: str,
    agent_ids: dict[str, str],
    *,
    repeat: int | None = None,
    store_path: Path | None = None,
    on_run: Callable[[LabRun], None] | None = None,
) -> LabResult:
    """Run the lab against a server that serves ``agent_ids`` (variant → agent id)."""
    result = LabResult(spec, url=url)
    t0 = time.monotonic()
    scenarios = {
        v.name: spec.scenario.model_copy(update={"agent": agent_ids[v.name]}) for v in spec.variants
    }
    for k in range(repeat or spec.repeat):
        for variant in spec.variants:  # interleaved: load drift hits every variant alike
            suite = await run_suite([scenarios[variant.name]], url, store_path=store_path)
            lab_run = LabRun(variant.name, k, suite.results[0])
            result.runs.append(lab_run)
            if on_run is not None:
                on_run(lab_run)
    result.duration_s = time.monotonic() - t0
    return result


def run_lab(
    spec: LabSpec,
    *,
    config: Path | None = None,
    out_dir: Path = Path("runs"),
    repeat: int | None = None,
    on_run: Callable[[LabRun], None] | None = None,
) -> tuple[LabResult, Path]:
    """Start the bundled server (its own process) with the variants, run, save the tables.

    Returns the result and the run folder, which holds ``replies.csv``, ``summary.csv``,
    ``lab.png``, the agents file and the server's log.
    """
    from sagelab.bench.serverproc import ServerProcess

    run_dir = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-lab-{spec.name}"
    run_dir.mkdir(parents=True, exist_ok=False)
    ids = lab_agents_file(spec, config, run_dir)
    log = run_dir / "server.log"
    try:
        server = ServerProcess(run_dir / "agents.yaml", agents=list(ids.values()), log_path=log)
        server.__enter__()
    except RuntimeError as exc:
        raise RuntimeError(f"the bundled server did not start ({exc}); see {log}") from exc
    try:
        result = asyncio.run(
            run_lab_on(
                spec,
                server.http_url,
                ids,
                repeat=repeat,
                store_path=run_dir / STORE_NAME,
                on_run=on_run,
            )
        )
    finally:
        server.__exit__(None, None, None)
    save_lab(result, run_dir)
    return result, run_dir


def save_lab(result: LabResult, run_dir: Path) -> None:
    result.replies.to_csv(run_dir / "replies.csv", index=False)
    result.summary().to_csv(run_dir / "summary.csv")
    from sagelab.lab.plots import plot_lab

    plot_lab(result.replies, run_dir / "lab.png")
