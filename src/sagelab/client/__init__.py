"""The client side: ``Session`` (async), ``SyncSession`` and the timeline they record."""

from sagelab.client.blocking import SyncSession
from sagelab.client.netem import PRESETS, NetworkConditions
from sagelab.client.reconnect import ReconnectPolicy
from sagelab.client.session import SentAudio, Session, SessionError, conversation_url
from sagelab.client.timeline import Timeline, TimelineEvent

__all__ = [
    "PRESETS",
    "NetworkConditions",
    "ReconnectPolicy",
    "SentAudio",
    "Session",
    "SessionError",
    "SyncSession",
    "Timeline",
    "TimelineEvent",
    "conversation_url",
]
