"""The results contract as the LedgerClient keeps it (issue 13, item 6): at least one result per
transfer; a duplicate (the same message_id again, after a relay or coordinator restart) is dropped
and counted; a second result with another message_id (a reused id's refusal) is kept, in order.
And no service on the money path can import the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from deploy.ledger_client import LedgerClient
from schemas.public import FreezeAccount, TransferFunds, encode_public
from schemas.topics import Namespace
from tests.unit.test_domain_purity import ROOT, imported_modules, package_of

MONEY_PATH = (
    "shards",
    "coordinator/service",
    "coordinator/saga",
    "coordinator/adapters",
    "coordinator/api",
    "schemas",
)


def _result(transfer_id: str, message_id: str, state: str = "completed", reason: str | None = None) -> bytes:
    return orjson.dumps(
        {"type": "TransferResult", "message_id": message_id, "transfer_id": transfer_id, "state": state,
         "reason": reason}
    )  # fmt: skip


async def test_duplicates_are_dropped_by_message_id_and_other_answers_kept() -> None:
    client = LedgerClient({"bootstrap_servers": "127.0.0.1:1"}, Namespace("t_"))  # never started
    heard: list[tuple[str, str]] = []
    client.on_result = lambda key, result: heard.append((key, result["message_id"]))
    first, refusal = _result("t1", "m1"), _result("t1", "m2", "rejected", "transfer_id_reused")
    for raw in (first, first, refusal, first, b"not json", b"[1]", orjson.dumps({"transfer_id": "t2"})):
        client._record(raw)
    assert [r["message_id"] for r in client.by_id["t1"]] == ["m1", "m2"]
    assert client.result("t1") == orjson.loads(first)
    assert client.deliveries == {"m1": 3, "m2": 1}
    assert client.unreadable == 3, "not JSON, not an object, no message_id"
    assert heard == [("t1", "m1"), ("t1", "m2")], "on_result hears each new result once"
    assert "t2" not in client.by_id
    account = orjson.dumps(
        {"type": "AccountResult", "message_id": "m3", "command_id": "c1", "outcome": "done"}
    )
    client._record(account)
    assert client.result("c1") is not None


class _FlakyProducer:
    """Fails the first send outright and the second at the broker's acknowledgement."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        self.attempts.append((topic, key, value))
        if len(self.attempts) == 1:
            raise KafkaConnectionError("no broker")
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self.attempts) == 2:
            acknowledged.set_exception(KafkaTimeoutError())
        else:
            acknowledged.set_result(None)
        return acknowledged


async def test_send_until_acknowledged_retries_a_failed_send_and_a_failed_acknowledgement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = Namespace("t_")
    client = LedgerClient({"bootstrap_servers": "127.0.0.1:1"}, ns)  # never started
    producer = _FlakyProducer()
    monkeypatch.setattr(client, "_producer", producer)
    transfer = TransferFunds("t1", "alice", "bob", 1050, "EUR")
    await client.send_until_acknowledged(transfer, retry_s=0)
    assert producer.attempts == [(ns.transfers, b"t1", encode_public(transfer))] * 3
    freeze = FreezeAccount("c1", "alice")
    await client.send_until_acknowledged(freeze, retry_s=0)
    assert producer.attempts[3:] == [(ns.account_commands, b"alice", encode_public(freeze))]


def test_no_money_path_module_imports_the_client() -> None:
    found = {}
    for folder in MONEY_PATH:
        for path in sorted((ROOT / folder).rglob("*.py")):
            names = imported_modules(path.read_text(), package_of(path))
            if any(n == "deploy.ledger_client" or n.startswith("deploy.ledger_client.") for n in names):
                found[str(Path(path).relative_to(ROOT))] = True
    assert found == {}
