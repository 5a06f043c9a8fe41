"""Issue 13, item 4: issuance accounts are configuration. `ledger coordinator run` takes them from
`--issuance-account` (repeatable) and from LEDGER_ISSUANCE_ACCOUNTS (comma- or space-separated);
each one listed, and no other, may be opened with an overdraft. Before, click split the variable on
whitespace only, so `a,b` configured one account named "a,b" and neither a nor b could be opened."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

import coordinator.cli
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from schemas import envelopes
from schemas.public import OpenAccountRequest, encode_public
from tests.fakes import FakeSagaStore, handle_batch
from tests.unit.test_internal_auth_edges import NS, PMAP, decoded, record

_ENV = {"LEDGER_DATABASE_URL": "postgresql://nowhere/x", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def _settings_of(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> CoordinatorSettings:
    """The settings `ledger coordinator run` would start its coordinator with (nothing connects)."""
    seen: list[CoordinatorSettings] = []

    async def capture(_config: object, settings: CoordinatorSettings, *_: Any) -> None:
        seen.append(settings)

    monkeypatch.setattr(coordinator.cli, "run_coordinator", capture)
    monkeypatch.setattr(
        coordinator.cli, "run_until_signalled", lambda main: asyncio.run(main(asyncio.Event()))
    )
    result = CliRunner(env={**_ENV, **env}).invoke(coordinator.cli.coordinator_group, ["run", *args])
    assert result.exit_code == 0, result.output
    (settings,) = seen
    return settings


def _opened(settings: CoordinatorSettings, accounts: list[str]) -> dict[str, str]:
    """Each account opened with an overdraft: `sent` (its OpenAccount went to a shard) or the reason
    the coordinator answered with."""
    opens = [OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**12, {}) for a in accounts]
    records = [
        record(NS.account_commands, encode_public(o), o.account_id.encode(), [], i)
        for i, o in enumerate(opens)
    ]
    store = FakeSagaStore()
    coordinator = Coordinator(settings, NS, PMAP, lambda: 1_000)
    asyncio.run(handle_batch(coordinator, store, decoded(records)))
    verdicts: dict[str, str] = {}
    for message in store.outbox:
        if message.topic == NS.results:
            body = orjson.loads(message.payload)
            verdicts[body["account_id"]] = body["reason"]
        else:
            for unpacked in envelopes.commands(message.payload):
                verdicts[unpacked.message.account_id] = "sent"  # type: ignore[union-attr]
    return verdicts


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([], {"LEDGER_ISSUANCE_ACCOUNTS": "issuer-eur,issuer-usd"}),
        ([], {"LEDGER_ISSUANCE_ACCOUNTS": " issuer-eur, issuer-usd "}),
        ([], {"LEDGER_ISSUANCE_ACCOUNTS": "issuer-eur issuer-usd"}),
        (["--issuance-account", "issuer-eur", "--issuance-account", "issuer-usd"], {}),
        (["--issuance-account", "issuer-eur,issuer-usd"], {}),
    ],
    ids=["env commas", "env commas and spaces", "env spaces", "repeated option", "option with a comma"],
)
def test_every_configured_issuance_account_may_be_opened_with_an_overdraft(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_of(args, env, monkeypatch)
    assert settings.issuance_accounts == {"issuer-eur", "issuer-usd"}
    assert _opened(settings, ["issuer-eur", "issuer-usd", "customer"]) == {
        "issuer-eur": "sent",
        "issuer-usd": "sent",
        "customer": "overdraft_not_allowed",
    }


def test_without_configuration_no_account_may_have_an_overdraft(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_of([], {}, monkeypatch)
    assert settings.issuance_accounts == frozenset()
    assert _opened(settings, ["issuer"]) == {"issuer": "overdraft_not_allowed"}
