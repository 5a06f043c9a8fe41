"""The status API on a real ledger: transfers with their steps, lists by state, balances, health,
bearer tokens and JSON errors (the edge cases without a database: tests/unit/test_status_api_access.py)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from coordinator.api.auth import ApiTokens
from coordinator.api.status import make_app
from deploy.ledger_init import init_ledger
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, produce_raw, running_ledger


async def test_status_api_answers_and_refuses_precisely(kafka_bootstrap: str, database_url: str) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    (a0,), (b1,) = accounts_on(pmap, 0, 1), accounts_on(pmap, 1, 1)
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**9 if a == "issuer" else 0, {})
            for a in ("issuer", a0, b1)
        ]
        await produce_raw(
            config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens]
        )
        await results.wait_for([o.command_id for o in opens])
        moves = [
            TransferFunds(str(uuid.uuid4()), "issuer", a0, 5_000, "EUR"),
            TransferFunds(str(uuid.uuid4()), a0, b1, 1_200, "EUR"),
        ]
        for move in moves:
            await produce_raw(config, config.namespace.transfers, [(None, encode_public(move))])
            await results.wait_for([move.transfer_id])
        token = secrets.token_urlsafe(32)
        app = await make_app(config, ApiTokens((token,)))
        auth = {"Authorization": f"Bearer {token}"}
        async with TestClient(TestServer(app)) as client:

            def get(path: str, headers: dict[str, str] = auth) -> Any:
                return client.get(path, headers=headers)

            health = await get("/healthz", {})
            assert health.status == 200
            for headers in ({}, {"Authorization": f"Bearer {token[:-1]}"}):
                refused = await get(f"/transfers/{moves[1].transfer_id}", headers)
                assert (refused.status, (await refused.json())["error"]) == (401, "unauthorized")
                assert moves[1].transfer_id not in await refused.text()
            cross = await (await get(f"/transfers/{moves[1].transfer_id}")).json()
            assert cross["state"] == "completed"
            assert [s["step"] for s in cross["steps"]] == ["reserving", "crediting", "committing"]
            assert [s["shard"] for s in cross["steps"]] == [0, 1, 0]
            assert all(s["answered_at"] for s in cross["steps"])
            listed = await (await get("/transfers?state=completed")).json()
            assert {t["transfer_id"] for t in listed["transfers"]} >= {m.transfer_id for m in moves}
            account = await (await get(f"/accounts/{a0}")).json()
            assert (account["posted"], account["reserved"], account["available"]) == (3_800, 0, 3_800)
            for path, status, error in [
                (f"/transfers/{uuid.uuid4()}", 404, "transfer_not_found"),
                ("/transfers/not-a-uuid", 400, "invalid_transfer_id"),
                ("/transfers?state=lost", 400, "invalid_state"),
                ("/transfers?limit=x", 400, "invalid_limit"),
                ("/accounts/nobody", 404, "account_not_found"),
                ("/accounts/bad%20id", 400, "invalid_account_id"),
                ("/no-such-route", 404, "not_found"),
            ]:
                response = await get(path)
                assert (response.status, (await response.json())["error"]) == (status, error), path
