"""Issue 12, item 4: internal messages carry an HMAC bound to their topic, key and payload; anything
else is refused with a precise reason, and a key is rotated without refusing anything in flight."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigurationError
from schemas.message_auth import HEADER, MessageAuthenticator, TopicSigner, Unauthenticated
from schemas.shard_messages import CreditFunds, encode
from schemas.topics import Namespace

OLD = ("k2026a", bytes(range(32)))
NEW = ("k2026b", bytes(range(100, 132)))
TOPIC = "ledger.shard.03.commands"
KEY = b"2f1e6c1a-0d4e-4c55-9e0b-6f2b1c3d4e5f"
PAYLOAD = encode(
    CreditFunds(
        "6b1f0c9e-2a3d-4e5f-8a7b-1c2d3e4f5a6b",
        "2f1e6c1a-0d4e-4c55-9e0b-6f2b1c3d4e5f",
        "acct-17",
        5_000,
        "EUR",
    )
)


def signed(
    auth: MessageAuthenticator, topic: str = TOPIC, key: bytes | None = KEY
) -> list[tuple[str, bytes]]:
    return [auth.sign(topic, key, PAYLOAD)]


def test_a_signed_message_verifies() -> None:
    auth = MessageAuthenticator([OLD])
    name, value = auth.sign(TOPIC, KEY, PAYLOAD)
    assert name == HEADER
    assert value.startswith(b"v1:k2026a:")
    assert len(value.split(b":")[2]) == 64
    auth.verify(TOPIC, KEY, PAYLOAD, [("traceparent", b"00-ab-cd-01"), (name, value)])


def test_a_message_without_the_header_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="no ledger-auth header"):
        MessageAuthenticator([OLD]).verify(TOPIC, KEY, PAYLOAD, [("traceparent", b"x")])
    with pytest.raises(Unauthenticated, match="no ledger-auth header"):
        MessageAuthenticator([OLD]).verify(TOPIC, KEY, PAYLOAD, None)


def test_another_key_is_refused_as_a_bad_mac() -> None:
    forged = [MessageAuthenticator([("k2026a", b"\x07" * 32)]).sign(TOPIC, KEY, PAYLOAD)]
    with pytest.raises(Unauthenticated, match="bad MAC"):
        MessageAuthenticator([OLD]).verify(TOPIC, KEY, PAYLOAD, forged)


@pytest.mark.parametrize(
    ("topic", "key", "payload"),
    [
        ("ledger.shard.04.commands", KEY, PAYLOAD),  # replayed onto another shard
        ("ledger.shard-replies", KEY, PAYLOAD),  # or onto another internal topic
        (TOPIC, b"another-key", PAYLOAD),
        (TOPIC, None, PAYLOAD),  # the key dropped
        (TOPIC, b"", PAYLOAD),  # or emptied: not the same as none
        (TOPIC, KEY, PAYLOAD.replace(b"5000", b"5000000")),  # the amount raised
        (TOPIC, KEY, PAYLOAD + b" "),
    ],
)
def test_a_signature_covers_topic_key_and_payload(topic: str, key: bytes | None, payload: bytes) -> None:
    auth = MessageAuthenticator([OLD])
    with pytest.raises(Unauthenticated, match="bad MAC"):
        auth.verify(topic, key, payload, signed(auth))


def test_no_key_and_an_empty_key_sign_differently() -> None:
    auth = MessageAuthenticator([OLD])
    assert auth.sign(TOPIC, None, PAYLOAD) != auth.sign(TOPIC, b"", PAYLOAD)
    auth.verify(TOPIC, None, PAYLOAD, [auth.sign(TOPIC, None, PAYLOAD)])


def test_field_boundaries_cannot_be_shifted() -> None:
    # Length prefixes: moving bytes from the topic into the key (or key into payload) is no match.
    auth = MessageAuthenticator([OLD])
    header = auth.sign("ab", b"c", b"d")
    for topic, key, payload in (("a", b"bc", b"d"), ("ab", b"", b"cd"), ("abc", None, b"d")):
        with pytest.raises(Unauthenticated):
            auth.verify(topic, key, payload, [header])


def test_an_unknown_key_id_is_named() -> None:
    header = MessageAuthenticator([NEW]).sign(TOPIC, KEY, PAYLOAD)
    with pytest.raises(Unauthenticated, match="unknown key id 'k2026b'"):
        MessageAuthenticator([OLD]).verify(TOPIC, KEY, PAYLOAD, [header])


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"v1:k2026a",
        b"v2:k2026a:" + b"0" * 64,  # a version we do not speak
        b"v1:k2026a:" + b"0" * 63,
        b"v1:k2026a:" + b"g" * 64,
        b"v1:k2026a:" + b"0" * 64 + b":x",
        b"v1:k2026a:" + "é".encode() * 32,
        b"\xff\xfe",
    ],
)
def test_a_malformed_header_is_refused_as_such(value: bytes) -> None:
    with pytest.raises(Unauthenticated, match="malformed ledger-auth header"):
        MessageAuthenticator([OLD]).verify(TOPIC, KEY, PAYLOAD, [(HEADER, value)])


def test_two_auth_headers_are_refused() -> None:
    auth = MessageAuthenticator([OLD])
    good = auth.sign(TOPIC, KEY, PAYLOAD)
    with pytest.raises(Unauthenticated, match="more than one ledger-auth header"):
        auth.verify(TOPIC, KEY, PAYLOAD, [good, (HEADER, b"v1:k2026a:" + b"0" * 64)])


def test_rotation_old_kid_still_verifies_when_listed_second() -> None:
    old_only, both_old_first, both_new_first, new_only = (
        MessageAuthenticator([OLD]),
        MessageAuthenticator([OLD, NEW]),
        MessageAuthenticator([NEW, OLD]),
        MessageAuthenticator([NEW]),
    )
    # Step 1: the new key added second everywhere; still signing with the old one.
    assert both_old_first.sign(TOPIC, KEY, PAYLOAD) == old_only.sign(TOPIC, KEY, PAYLOAD)
    # Step 2: the new key first, process by process; both kinds verify everywhere in between.
    for verifier in (both_old_first, both_new_first):
        verifier.verify(TOPIC, KEY, PAYLOAD, signed(old_only))
        verifier.verify(TOPIC, KEY, PAYLOAD, signed(both_new_first))
    assert both_new_first.sign(TOPIC, KEY, PAYLOAD)[1].startswith(b"v1:k2026b:")
    # Step 3: the old key dropped; what it signed is refused from then on.
    with pytest.raises(Unauthenticated, match="unknown key id 'k2026a'"):
        new_only.verify(TOPIC, KEY, PAYLOAD, signed(old_only))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "LEDGER_MESSAGE_KEYS"),
        ([("k1", b"short")], "at least 32 bytes"),
        ([("k:1", bytes(32))], "key id"),
        ([("k1", bytes(32)), ("k1", bytes(range(32)))], "twice"),
    ],
)
def test_unusable_keys_are_a_configuration_error(keys: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MessageAuthenticator(keys)


def test_unauthenticated_is_not_retriable() -> None:
    assert Unauthenticated("x").retriable is False
    assert Unauthenticated("x").reason == "unauthenticated"


def test_only_internal_topics_are_signed() -> None:
    ns = Namespace("t_ab_")
    signer = TopicSigner(MessageAuthenticator([OLD]), ns.is_internal)
    for topic in (ns.shard_commands(0), ns.shard_commands(17), ns.shard_commands(1023), ns.shard_replies):
        assert ns.is_internal(topic)
        assert [name for name, _ in signer.headers(topic, KEY, PAYLOAD)] == [HEADER]
    for topic in (ns.transfers, ns.account_commands, ns.results, ns.dead_letters, "ledger.shard.00.commands"):
        assert not ns.is_internal(topic)
        assert signer.headers(topic, KEY, PAYLOAD) == []
