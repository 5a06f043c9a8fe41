"""The results contract as the LedgerClient keeps it (issue 13, item 6): at least one result per
transfer; a duplicate (the same message_id again, after a relay or coordinator restart) is dropped
and counted; a second result with another message_id (a reused id's refusal) is kept, in order.
And no service on the money path can import the client."""

from __future__ import annotations

from pathlib import Path

import orjson

from deploy.ledger_client import LedgerClient
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


def test_no_money_path_module_imports_the_client() -> None:
    found = {}
    for folder in MONEY_PATH:
        for path in sorted((ROOT / folder).rglob("*.py")):
            names = imported_modules(path.read_text(), package_of(path))
            if any(n == "deploy.ledger_client" or n.startswith("deploy.ledger_client.") for n in names):
                found[str(Path(path).relative_to(ROOT))] = True
    assert found == {}
