"""Envelopes: many shard commands, or many shard replies, in ONE Kafka record (internal topics only).

The Python side of schemas/json/shard-envelope.json. A coordinator batch sends one envelope per
shard, and a shard batch answers with one envelope per partition of the replies topic, so a hop
costs one record, one outbox row and one MAC however many transfers it carries. Every message
inside keeps its own fixed message_id: dedupe stays per command and per reply.

An envelope's bytes begin with `{"type":"ShardCommands",` (or `ShardReplies`): the encoder below
writes them so, and a record that does not is read as ONE message, by exactly the checks a single
message always met (so every verdict on a single message is unchanged). A message inside an
authenticated envelope that fails its own checks is refused alone; the others still apply.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import orjson

from schemas.shard_messages import (
    InvalidMessage,
    ShardCommand,
    ShardReply,
    command_from_dict,
    decode_command,
    decode_reply,
    reply_from_dict,
)

T = TypeVar("T")

COMMANDS: Final = "ShardCommands"
REPLIES: Final = "ShardReplies"
VERSION: Final = 1
MAX_MESSAGES: Final = 1000
"""Most messages in one envelope: a coordinator batch that sends more to one shard sends several."""
MAX_BYTES: Final = 1024 * 1024
"""Largest envelope a decoder reads (the topic's max.message.bytes is the tighter bound in practice;
the packer keeps under it)."""

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,3})$")
_FIELDS: Final = frozenset({"type", "v", "envelope_id", "traceparents", "messages"})


def prefix(kind: str) -> bytes:
    """How every envelope of `kind` begins."""
    return b'{"type":"' + kind.encode() + b'",'


@dataclass(frozen=True, slots=True)
class Unpacked(Generic[T]):
    """One message of a record: decoded, or why it cannot be. (A dead letter of one message quotes
    the record it came in and names its index: no message is encoded again just in case.)"""

    message: T | InvalidMessage
    index: int | None
    """Its place in the envelope; None when the record was a single message."""
    traceparent: str | None = None


def encode(kind: str, payloads: Sequence[bytes], traceparents: Mapping[int, str]) -> bytes:
    """An envelope of already-encoded messages (their bytes are joined, not parsed again).

    Its id is a hash of what it carries: the same messages packed again make the same envelope."""
    digest = bytearray(hashlib.sha256(b"\x00".join(payloads)).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # a UUID v8: custom, derived from content
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    head = orjson.dumps({
        "type": kind, "v": VERSION, "envelope_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
        "traceparents": {str(i): tp for i, tp in traceparents.items()},
    })  # fmt: skip
    return head[:-1] + b',"messages":[' + b",".join(payloads) + b"]}"


def unpack(raw: bytes, kind: str, one: Callable[[Any], T], single: Callable[[bytes], T]) -> list[Unpacked[T]]:
    """A record's messages, each decoded by `one` (a parsed message -> T, or InvalidMessage), or the
    record itself decoded by `single` when it is not an envelope. InvalidMessage when the record
    as a whole is unreadable: then nothing in it applies."""
    if not raw.startswith(prefix(kind)):
        return [Unpacked(single(raw), None)]
    data = _read(raw)
    messages: list[Any] = data["messages"]
    traceparents: dict[str, str] = data["traceparents"]
    out: list[Unpacked[T]] = []
    for i, item in enumerate(messages):
        try:
            message: T | InvalidMessage = one(item)
        except InvalidMessage as e:
            message = e
        out.append(Unpacked(message, i, traceparents.get(str(i))))
    return out


def commands(raw: bytes) -> list[Unpacked[ShardCommand]]:
    """A shard command record's commands: an envelope's, or the one it is."""
    return unpack(raw, COMMANDS, command_from_dict, decode_command)


def replies(raw: bytes) -> list[Unpacked[ShardReply]]:
    """A shard reply record's replies: an envelope's, or the one it is."""
    return unpack(raw, REPLIES, reply_from_dict, decode_reply)


def _read(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BYTES:
        raise InvalidMessage(f"envelope of {len(raw)} bytes, at most {MAX_BYTES}", "too_large")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidMessage(f"not UTF-8: {e}", "not_utf8") from None
    # No bracket count before parsing (on an envelope that scan was 5% of a process): orjson stops
    # at 1,024 levels by itself, and a message nested deeper than its contract fails its own checks.
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e):
            raise InvalidMessage(f"envelope nested too deep: {e}", "nesting_too_deep") from None
        raise InvalidMessage(f"not JSON: {e}", "not_json") from None
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object", "not_an_object")  # unreachable: the prefix is '{'
    extra = data.keys() - _FIELDS
    if extra:
        raise InvalidMessage(f"unknown envelope fields {sorted(extra)!r:.200}", "unknown_field")
    missing = _FIELDS - data.keys()
    if missing:
        raise InvalidMessage(f"envelope lacks {sorted(missing)!r}", "missing_field")
    if data["v"] != VERSION or isinstance(data["v"], bool):
        raise InvalidMessage(f"unsupported envelope version {data['v']!r:.20}", "unsupported_version")
    if not (isinstance(data["envelope_id"], str) and _UUID.fullmatch(data["envelope_id"])):
        raise InvalidMessage(f"envelope_id is invalid: {data['envelope_id']!r:.80}")
    messages = data["messages"]
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise InvalidMessage(f"messages must be a list of 1 to {MAX_MESSAGES}")
    traceparents = data["traceparents"]
    if not isinstance(traceparents, dict) or not all(
        _INDEX.fullmatch(k) and int(k) < len(messages) and isinstance(v, str) and _TRACEPARENT.fullmatch(v)
        for k, v in traceparents.items()
    ):
        raise InvalidMessage("traceparents must map message indexes to W3C traceparents")
    return data
