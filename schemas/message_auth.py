"""Authentication of internal messages (shard commands, shard replies): part of the wire contract.

Kafka ACLs say who may write a topic; this says the message itself came from a coordinator or a
shard, so a leaked Kafka credential alone cannot move money. The relay that publishes an internal
message adds one header, `ledger-auth: v1:<key id>:<hex HMAC-SHA256>`, and the shard worker (for
commands) and the coordinator (for replies) verify it before decoding anything; a record that fails
is dead-lettered as `unauthenticated` and changes nothing.

The MAC covers a length-prefixed encoding of the topic, the record key (with a flag telling no key
from an empty one) and the payload, so a signed command replayed onto another shard's topic, or
with another key, or with one byte changed, does not verify. Other headers (trace context) are not
covered: they carry no authority. Public topics are not signed; they are for clients.

Keys (LEDGER_MESSAGE_KEYS, `kid:hex,...`): the first signs, every one verifies. To rotate without
refusing anything in flight:
1. add the new key *second* on every coordinator and shard (they still sign with the old one);
2. once all run with both, move the new key *first* everywhere (each signs with the new one; all
   still verify the old);
3. drop the old key once nothing it signed is left unconsumed on the internal topics (consumer lag
   zero since step 2 finished). Records are signed when the relay publishes them, not when they
   enter an outbox, so rows still waiting in an outbox are signed with whichever key is first then.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.errors import ConfigurationError, LedgerError

HEADER: Final = "ledger-auth"
VERSION: Final = "v1"
MIN_KEY_BYTES: Final = 32
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_VALUE = re.compile(rb"^v1:([A-Za-z0-9_.-]{1,32}):([0-9a-f]{64})$")
_DOMAIN: Final = b"ledger-message-auth/v1\x00"  # these MACs can never be mistaken for another use's


class Unauthenticated(LedgerError):
    """An internal message without a valid MAC from a coordinator or a shard. The same bytes will
    never verify: not retriable; the record is dead-lettered with `reason`."""

    retriable = False
    reason: Final = "unauthenticated"


class MessageAuthenticator:
    """HMAC-SHA256 of internal messages with a shared key set; pure (no I/O), thread-safe."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        listed = list(keys)
        if not listed:
            raise ConfigurationError(
                "no message keys: coordinators and shards need LEDGER_MESSAGE_KEYS (kid:hex) to "
                "authenticate internal messages"
            )
        for kid, secret in listed:
            if not _KID.match(kid):
                raise ConfigurationError(f"message key id {kid!r:.40} must match {_KID.pattern}")
            if len(secret) < MIN_KEY_BYTES:
                raise ConfigurationError(f"message key {kid} must be at least {MIN_KEY_BYTES} bytes")
        # Keyed once here: each MAC then copies the state instead of setting up HMAC again.
        self._keys = {kid: hmac.new(secret, _DOMAIN, hashlib.sha256) for kid, secret in listed}
        if len(self._keys) != len(listed):
            raise ConfigurationError("a message key id is listed twice")
        self.signing_kid = listed[0][0]

    def sign(self, topic: str, key: bytes | None, payload: bytes) -> tuple[str, bytes]:
        """The header that authenticates this record, signed with the first key."""
        mac = _mac(self._keys[self.signing_kid], topic, key, payload)
        return HEADER, f"{VERSION}:{self.signing_kid}:{mac.hex()}".encode()

    def verify(
        self, topic: str, key: bytes | None, payload: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> None:
        """Return if the record carries a valid MAC by any listed key; else raise Unauthenticated."""
        values = [v for name, v in headers or () if name == HEADER]
        if not values:
            raise Unauthenticated(f"no {HEADER} header")
        if len(values) > 1:
            raise Unauthenticated(f"more than one {HEADER} header")
        match = _VALUE.match(values[0])
        if match is None:
            raise Unauthenticated(f"malformed {HEADER} header {values[0]!r:.80} (want v1:<kid>:<64 hex>)")
        kid = match.group(1).decode()
        keyed = self._keys.get(kid)
        if keyed is None:
            raise Unauthenticated(f"unknown key id {kid!r}")
        expected = _mac(keyed, topic, key, payload).hex().encode()
        if not hmac.compare_digest(expected, match.group(2)):
            raise Unauthenticated(f"bad MAC (key id {kid!r}) for this topic, key and payload")


@dataclass(frozen=True)
class TopicSigner:
    """What a relay adds to each outgoing record: the auth header on internal topics, nothing on
    public ones. `internal` comes from the deployment's Namespace at wiring time."""

    authenticator: MessageAuthenticator
    internal: Callable[[str], bool]

    def headers(self, topic: str, key: bytes | None, payload: bytes) -> list[tuple[str, bytes]]:
        if not self.internal(topic):
            return []
        return [self.authenticator.sign(topic, key, payload)]


def _mac(keyed: hmac.HMAC, topic: str, key: bytes | None, payload: bytes) -> bytes:
    """HMAC of topic, key and payload, each length-prefixed: no field's bytes can pass for another's."""
    mac = keyed.copy()
    name = topic.encode()
    flagged_key = b"\x00" if key is None else b"\x01" + len(key).to_bytes(4, "big") + key
    mac.update(b"".join((len(name).to_bytes(4, "big"), name, flagged_key, len(payload).to_bytes(8, "big"))))
    mac.update(payload)
    return mac.digest()
