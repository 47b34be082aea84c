"""``ReconnectPolicy``'s backoff and validation, and the resume extension's wire names, which
the client and the server must agree on."""

from __future__ import annotations

import urllib.parse

import pytest

from sagelab.client import ReconnectPolicy
from sagelab.client.reconnect import RESUME_REFUSED, resume_query, with_query
from sagelab.protocol import closecodes


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    policy = ReconnectPolicy(
        max_attempts=6, initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2, jitter=0
    )
    assert policy.delays() == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_jitter_only_shortens_a_wait_by_at_most_its_share_and_is_seeded() -> None:
    policy = ReconnectPolicy(max_attempts=50, initial_backoff_s=1, max_backoff_s=1, jitter=0.5)
    delays = policy.delays()
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len({round(d, 9) for d in delays}) > 40  # spread out, not one value
    seeded = ReconnectPolicy(seed=7, jitter=1)
    assert seeded.delays() == seeded.delays()
    assert ReconnectPolicy(seed=8, jitter=1).delays() != seeded.delays()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_attempts": 0}, "reconnect=None"),
        ({"initial_backoff_s": -1}, "initial_backoff_s"),
        ({"max_backoff_s": float("inf")}, "max_backoff_s"),
        ({"initial_backoff_s": 2, "max_backoff_s": 1}, "must be >= initial_backoff_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_policies_say_what_to_write(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReconnectPolicy(**fields)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_attempts must be an int"):
        ReconnectPolicy(max_attempts=2.5)  # type: ignore[arg-type]


def test_client_and_server_agree_on_the_wire_names() -> None:
    assert RESUME_REFUSED == closecodes.RESUME_REFUSED
    assert resume_query("convai") == ("sagelab_resume", "resume_token")
    assert resume_query("relay") == ("resume", "resumeToken")


def test_with_query_replaces_adds_and_drops_parameters() -> None:
    url = "ws://h/v1/convai/conversation?agent_id=a%20b&conversation_signature=s&resume_token=old"
    out = with_query(url, {"resume_token": "new"}, drop=("conversation_signature",))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(out).query)
    assert query == {"agent_id": ["a b"], "resume_token": ["new"]}
    assert out.startswith("ws://h/v1/convai/conversation?")
