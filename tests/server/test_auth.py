"""Tests for signed conversation URLs and API keys."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sagelab.server.auth import (
    ALREADY_USED,
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    WRONG_AGENT,
    ApiKeyStore,
    AuthError,
    SignedUrlSigner,
    hash_key,
)

SECRET = b"0123456789abcdef0123456789abcdef"
SIGNER = SignedUrlSigner(SECRET, ttl_s=900)
T0 = 1_700_000_000.0
TOKEN = SIGNER.sign("agent_x", now=T0)

agent_ids = st.text(min_size=1, max_size=64)


def reason(signer: SignedUrlSigner, token: str, agent_id: str, now: float = T0) -> str | None:
    try:
        signer.verify(token, agent_id, now=now)
    except AuthError as exc:
        return exc.reason
    return None


def test_a_fresh_token_verifies_and_is_url_safe() -> None:
    SIGNER.verify(TOKEN, "agent_x", now=T0)
    SIGNER.verify(TOKEN, "agent_x", now=T0 + 899.999)
    assert TOKEN.replace("-", "").replace("_", "").isalnum()
    assert SIGNER.sign("agent_x", now=T0) != TOKEN  # a fresh nonce each time


def test_default_clock_is_wall_time() -> None:
    signer = SignedUrlSigner(SECRET, ttl_s=60)
    signer.verify(signer.sign("a"), "a")
    assert reason(signer, signer.sign("a", now=T0), "a", now=T0 + 60) == EXPIRED


@given(agent_id=agent_ids, now=st.floats(min_value=0, max_value=4e9))
def test_round_trip(agent_id: str, now: float) -> None:
    SIGNER.verify(SIGNER.sign(agent_id, now=now), agent_id, now=now)


@given(index=st.integers(min_value=0, max_value=len(TOKEN) - 1), char=st.characters())
def test_any_changed_character_never_verifies(index: int, char: str) -> None:
    assume(char != TOKEN[index])
    tampered = TOKEN[:index] + char + TOKEN[index + 1 :]
    assert reason(SIGNER, tampered, "agent_x") in {MALFORMED, BAD_SIGNATURE}


@given(data=st.data())
def test_any_flipped_bit_never_verifies(data: st.DataObject) -> None:
    raw = bytearray(base64.urlsafe_b64decode(TOKEN))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode()
    # The version byte is checked first; every other byte is covered by the signature.
    assert reason(SIGNER, tampered, "agent_x") == (MALFORMED if index == 0 else BAD_SIGNATURE)


@given(token=st.text(max_size=200))
def test_garbage_is_malformed_or_bad_never_an_exception(token: str) -> None:
    assert reason(SIGNER, token, "agent_x") in {MALFORMED, BAD_SIGNATURE}


@pytest.mark.parametrize(
    "token",
    ["", TOKEN[:-1], TOKEN + "A", TOKEN[:-4], TOKEN + "====", TOKEN[:-1] + "=", " " + TOKEN],
)
def test_wrong_length_or_alphabet_is_malformed(token: str) -> None:
    assert reason(SIGNER, token, "agent_x") == MALFORMED


def test_non_string_is_malformed() -> None:
    assert reason(SIGNER, TOKEN.encode(), "agent_x") == MALFORMED  # type: ignore[arg-type]


@given(signed_for=agent_ids, presented_for=agent_ids)
def test_wrong_agent_fails(signed_for: str, presented_for: str) -> None:
    assume(signed_for != presented_for)
    token = SIGNER.sign(signed_for, now=T0)
    assert reason(SIGNER, token, presented_for) == WRONG_AGENT


def test_another_secret_is_a_bad_signature() -> None:
    other = SignedUrlSigner(SECRET[::-1])
    assert reason(other, TOKEN, "agent_x") == BAD_SIGNATURE


def test_expiry_boundary() -> None:
    signer = SignedUrlSigner(SECRET, ttl_s=900)
    token = signer.sign("a", now=1000.0)
    signer.verify(token, "a", now=1899.999)
    assert reason(signer, token, "a", now=1900.0) == EXPIRED
    assert reason(signer, token, "a", now=10_000.0) == EXPIRED


@given(
    now=st.floats(min_value=0, max_value=4e9),
    ttl=st.floats(min_value=0.01, max_value=86_400),
    elapsed=st.floats(min_value=0, max_value=200_000),
)
def test_valid_until_ttl_then_expired(now: float, ttl: float, elapsed: float) -> None:
    signer = SignedUrlSigner(SECRET, ttl_s=ttl)
    token = signer.sign("a", now=now)
    outcome = reason(signer, token, "a", now=now + elapsed)
    if elapsed >= ttl:
        assert outcome == EXPIRED
    elif elapsed < ttl - 0.002:  # expiry is kept in whole milliseconds, rounded down
        assert outcome is None


def test_replay_rejected_with_consume() -> None:
    signer = SignedUrlSigner(SECRET)
    token = signer.sign("a", now=T0)
    signer.verify(token, "a", now=T0)  # plain checks don't use the token up
    signer.verify(token, "a", now=T0, consume=True)
    with pytest.raises(AuthError) as caught:
        signer.verify(token, "a", now=T0 + 1, consume=True)
    assert caught.value.reason == ALREADY_USED
    assert str(caught.value) == ALREADY_USED
    signer.verify(signer.sign("a", now=T0), "a", now=T0, consume=True)  # others still work


def test_refused_tokens_are_not_consumed() -> None:
    signer = SignedUrlSigner(SECRET, ttl_s=10)
    token = signer.sign("a", now=T0)
    assert reason(signer, token, "b") == WRONG_AGENT
    with pytest.raises(AuthError, match=WRONG_AGENT):
        signer.verify(token, "b", now=T0, consume=True)
    assert signer.remembered_nonces == 0
    signer.verify(token, "a", now=T0, consume=True)


def test_used_nonces_are_forgotten_once_expired() -> None:
    signer = SignedUrlSigner(SECRET, ttl_s=200)
    for i in range(100):
        signer.verify(signer.sign("a", now=T0 + i), "a", now=T0 + i, consume=True)
    assert signer.remembered_nonces == 100
    later = T0 + 270  # tokens signed at T0 .. T0+70 have expired by now
    signer.verify(signer.sign("a", now=later), "a", now=later, consume=True)
    assert signer.remembered_nonces == 100 - 71 + 1


@pytest.mark.parametrize(("secret", "ttl"), [(b"", 900), (SECRET, 0), (SECRET, float("nan"))])
def test_bad_signer_configuration(secret: bytes, ttl: float) -> None:
    with pytest.raises(ValueError):
        SignedUrlSigner(secret, ttl_s=ttl)


# ---------------------------------------------------------------------------------- API keys


def test_plain_and_hashed_keys() -> None:
    upper_hex = "sha256:" + hash_key("sk_3").removeprefix("sha256:").upper()
    store = ApiKeyStore(["sk_plain_1", hash_key("sk_hashed_2"), upper_hex])
    assert len(store) == 3
    assert store.check("sk_plain_1")
    assert store.check("sk_hashed_2")
    assert store.check("sk_3")
    assert not store.check("sk_plain_")
    assert not store.check(hash_key("sk_hashed_2"))  # the hash is not itself a key
    assert not store.check("")
    assert not store.check(None)
    assert not store.check("\udcff")  # a lone surrogate from a header is refused, not raised
    assert "sk_plain_1" not in repr(store)


def test_empty_store_accepts_nothing() -> None:
    assert not ApiKeyStore().check("anything")
    assert len(ApiKeyStore([])) == 0


def test_hash_key_format() -> None:
    digest = hash_key("abc")
    assert digest == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert ApiKeyStore.hash_key("abc") == digest
    with pytest.raises(ValueError):
        hash_key("")


@pytest.mark.parametrize("entry", ["", "sha256:", "sha256:abc", "sha256:" + "g" * 64])
def test_bad_key_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        ApiKeyStore([entry])


@given(keys=st.lists(st.text(min_size=1), min_size=1, max_size=5), probe=st.text())
def test_check_matches_exactly_the_configured_keys(keys: list[str], probe: str) -> None:
    keys = [k for k in keys if not k.startswith("sha256:")]
    assume(keys)
    store = ApiKeyStore(keys[:1] + [hash_key(k) for k in keys[1:]])
    assert all(store.check(k) for k in keys)
    assert store.check(probe) == (probe in keys)
