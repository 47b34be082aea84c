"""Prometheus metrics of one server instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 5)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge(
            "sagelab_active_sessions", "Sessions open now", ["protocol"], registry=r
        )
        self.sessions = Counter(
            "sagelab_sessions", "Sessions started", ["protocol", "agent"], registry=r
        )
        self.session_seconds = Histogram(
            "sagelab_session_duration_seconds",
            "Session length",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.messages = Counter(
            "sagelab_messages", "WebSocket messages", ["direction", "type"], registry=r
        )
        self.bytes = Counter("sagelab_bytes", "WebSocket payload bytes", ["direction"], registry=r)
        self.errors = Counter("sagelab_errors", "Errors by type", ["error_type"], registry=r)
        self.ping_rtt = Histogram(
            "sagelab_ping_rtt_seconds",
            "Server ping to client pong",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_audio = Histogram(
            "sagelab_time_to_first_audio_seconds",
            "Agent turn start (the server decided to reply) to its first audio chunk sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "sagelab_stage_seconds",
            "Pipeline stage durations",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_seconds = Histogram(
            "sagelab_tool_call_seconds",
            "Tool call duration",
            ["tool", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.interruptions = Counter(
            "sagelab_interruptions", "Agent turns cut by barge-in", registry=r
        )
        self.held_sessions = Gauge(
            "sagelab_held_sessions",
            "Conversations whose client vanished, held for a resume",
            ["protocol"],
            registry=r,
        )
        self.resumes = Counter(
            "sagelab_resumes",
            "Held conversations by outcome: resumed, refused (bad token), expired (grace over)",
            ["protocol", "outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
