"""Metrics: pure functions from recorded timelines to pandas DataFrames.

Nothing here talks to a network or a clock. Every figure is computed from what was recorded,
so a saved run (``Timeline.load``) gives the same numbers as the live session did, and the
benchmarks, scenarios, plots and notebooks all share one definition of each metric.

Inputs
    * a client ``Timeline`` (``sagelab.client``: ``Session``, ``SyncSession``, the SDK
      helper); every function that takes "a timeline" also takes a plain list of
      ``TimelineEvent``;
    * conversations read from the server's store (``ConversationStore.get_conversation``):
      ``store_session_table``, ``store_turn_table``, ``store_tool_call_table``;
    * the notebook player's own reports (``player_playout``), as records or as ``local``
      timeline events of these types (all times ``time.monotonic_ns()`` in the kernel):

      ==================== ========================================================
      ``playback_start``   ``event_id``, ``t_ns``: the turn's first sample started playing
      ``playback_underrun`` ``event_id``, ``t_ns`` (the player ran dry), ``gap_ms``
      ``playback_end``     ``event_id``, ``t_ns``, ``played_ms``, ``flushed`` (interrupted);
                           ``arrivals_ms`` / ``durations_ms``: the turn's chunks as the
                           player got them (browser ``performance.now()`` ms, the clock of
                           the report's own ``browser_ms``)
      ==================== ========================================================

Tables (one row per …)
    ``turn_table(tl)``          agent turn: voice-to-voice, time to first audio, transcript and
                                agent-text latency, interruption latency, tool calls, the
                                server's per-stage breakdown (``stage_<name>_ms``), texts
    ``session_table(tls)``      session: set-up time, duration, turns, interruptions per
                                minute, tool calls and errors, errors by type, close code
    ``tool_call_table(tl)``     tool call: name, parameters, duration, error, answered
    ``ping_table(tl)``          round-trip sample: the server's ``ping_ms`` and WebSocket
                                ping frames (``ws_rtt``)
    ``error_table(tls)``        ``error`` event or unparsable frame
    ``chunk_table(tl)``         received agent audio chunk: arrival, duration, stale
    ``playout(chunks, …)``      a ``Playout``: per-turn stutter (``.turns``) and every underrun
                                (``.underruns``) under a playout model with a jitter buffer
    ``player_playout(reports)`` the same ``Playout`` shape from a real player's reports
    ``delivered_chunk_table(reports)`` chunk: as the player got it (its end reports' arrival
                                times), for ``playout`` on what the player really received
    ``active_sessions(sessions)`` the number of open sessions over time (a step series)
    ``overview(tls)``           the web app's list: active sessions, session duration, audio
                                latency, tool-call success rate and duration, error rates by
                                type, interruption frequency
    ``percentiles(df, cols)``   count, p50, p95, p99, mean, max of each column (never a mean
                                alone)
    ``accuracy_table(pairs)``   utterance: WER and CER (``sagelab.metrics.accuracy``)

Times: columns ending ``_ns`` are ``time.monotonic_ns()`` stamps taken at the socket edge;
``_ms`` columns are durations in milliseconds; ``_s`` columns are seconds. Missing values are
``NaN`` (a greeting has no user speech before it, so no voice-to-voice). Each table keeps the
timeline's start in ``df.attrs["t0_ns"]`` so plots can draw relative times.

Where each latency starts and ends is documented in ``sagelab.metrics.latency`` and in the
README's "Metrics" section; the playout model in ``sagelab.metrics.stutter``.
"""

from __future__ import annotations

from sagelab.metrics.accuracy import Accuracy, accuracy_table, normalize, overall, score
from sagelab.metrics.latency import ping_table, tool_call_table, turn_table
from sagelab.metrics.sessions import active_sessions, error_table, overview, session_table
from sagelab.metrics.store import store_session_table, store_tool_call_table, store_turn_table
from sagelab.metrics.stutter import (
    Playout,
    chunk_table,
    delivered_chunk_table,
    player_playout,
    playout,
)
from sagelab.metrics.summary import PERCENTILE_COLUMNS, percentiles, summarize_values

__all__ = [
    "PERCENTILE_COLUMNS",
    "Accuracy",
    "Playout",
    "accuracy_table",
    "active_sessions",
    "chunk_table",
    "delivered_chunk_table",
    "error_table",
    "normalize",
    "overall",
    "overview",
    "percentiles",
    "ping_table",
    "player_playout",
    "playout",
    "score",
    "session_table",
    "store_session_table",
    "store_tool_call_table",
    "store_turn_table",
    "summarize_values",
    "tool_call_table",
    "turn_table",
]
