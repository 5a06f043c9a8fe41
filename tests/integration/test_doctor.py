"""`ledger doctor --json` on a real ledger: healthy it finds nothing and exits 0; with a shard's
worker stopped it names the saga waiting on it and the command that restarts it; with a journal
row altered behind the ledger's back it reports the broken chain. Exit 1 for both."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from deploy.kafka_admin import TopicSpec, create_topics
from deploy.ledger_init import init_ledger
from deploy.processes import free_port
from schemas.alerts import LiquidityAlert, encode_alert
from schemas.breaker import BreakerState, encode_breaker
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    fresh_config,
    ledger_cli,
    produce_raw,
    running_ledger,
)


def _id() -> str:
    return str(uuid.uuid4())


def _by_code(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        found.setdefault(f["code"], []).append(f)
    return found


async def test_doctor_finds_nothing_then_a_stopped_shard_then_a_broken_chain(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    (a0,) = accounts_on(pmap, 0, 1, prefix="cust")
    (c1,) = accounts_on(pmap, 1, 1, prefix="cust")
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(_id(), a, "EUR", 10**15 if a == "issuer" else 0, {})
            for a in ("issuer", a0, c1)
        ]
        await produce_raw(
            config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens]
        )
        await results.wait_for([o.command_id for o in opens])
        work = [TransferFunds(_id(), "issuer", a0, 50_000, "EUR"), TransferFunds(_id(), a0, c1, 2_000, "EUR")]
        for t in work:  # one after the other: the second spends what the first gave
            await produce_raw(config, config.namespace.transfers, [(None, encode_public(t))])
            assert (await results.wait_for([t.transfer_id]))[t.transfer_id]["state"] == "completed"
        code, report = await ledger_cli(config, "doctor", "--json")
    assert (code, report.get("findings")) == (0, []), report

    # Shard 1's worker is not running: a transfer to it waits, its command unread on shard 1's topic.
    async with running_ledger(config, [0]):
        waiting = TransferFunds(_id(), a0, c1, 700, "EUR")
        await produce_raw(config, config.namespace.transfers, [(None, encode_public(waiting))])
        await asyncio.sleep(3)
        code, report = await ledger_cli(config, "doctor", "--json", "--stuck-after", "1")
    assert code == 1, report
    found = _by_code(report)
    saga = (found.get("saga_stuck") or found.get("saga_parked") or [{}])[0]
    assert saga.get("subject") == waiting.transfer_id, report
    assert saga["fix"].splitlines() == [f"ledger status {waiting.transfer_id}", "ledger shard run --shard 1"]
    assert saga["detail"]["waiting_on"] == [1]
    stalled = found["consumer_stalled"]
    assert [(f["subject"], f["fix"]) for f in stalled] == [("shard 1", "ledger shard run --shard 1")], stalled

    # A journal row of shard 0 altered behind the ledger's back.
    conn = await asyncpg.connect(config.shard_database_url(0))
    try:
        await conn.execute("SET session_replication_role = replica")  # a superuser skipping triggers
        await conn.execute(
            f'UPDATE "{config.namespace.shard_schema(0)}".journal SET amount = amount + 1 WHERE seq = 1'
        )
    finally:
        await conn.close()
    code, report = await ledger_cli(config, "doctor", "--json")
    assert code == 1, report
    (chain,) = _by_code(report)["chain_broken"]
    assert (chain["severity"], chain["subject"], chain["detail"]["first_broken_seq"]) == (
        "critical",
        "shard 0",
        1,
    )
    assert chain["fix"].splitlines()[0] == "ledger verify --json"
    assert report["findings"][0]["severity"] == "critical"
    code, text = await ledger_cli(config, "doctor")  # the report for people
    assert code == 1
    assert "CRITICAL chain_broken: shard 0\n" in text["stdout"]
    assert "    ledger verify --json\n" in text["stdout"]


async def test_doctor_reports_what_it_cannot_reach() -> None:
    closed = free_port()  # nothing listens there
    env = {"LEDGER_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{closed}/ledger",
           "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("ledger")), "doctor", "--json", env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1, err.decode()
    report = json.loads(out)
    assert [(f["severity"], f["code"], f["subject"]) for f in report["findings"]] == [
        ("critical", "unreachable", "kafka"),
        ("critical", "unreachable", "postgres"),
    ]
    assert f"127.0.0.1:{closed}" in report["findings"][1]["explanation"]
    assert report["findings"][1]["fix"] == "ledger doctor"


def _alert(state: str, account: str, at_ms: int) -> bytes:
    return encode_alert(LiquidityAlert(_id(), "eur-floor", state, "critical", account, "EUR",
                                       "available_below", 900, 1000, at_ms, at_ms))  # fmt: skip


async def test_doctor_reads_the_breakers_and_the_alerts_still_firing(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    ns = config.namespace
    await create_topics(config.kafka_args(), [TopicSpec(ns.control, 1), TopicSpec(ns.alerts, 2)])
    breakers = [
        BreakerState(0, "open", False, "latency", "monitor", 1, 1_000),
        BreakerState(0, "open", True, "hash chain mismatch", "monitor", 2, 2_000),
        BreakerState(1, "open", False, "latency", "monitor", 1, 1_000),
        BreakerState(1, "closed", False, "", "monitor", 2, 3_000),
    ]
    await produce_raw(config, ns.control, [(str(b.shard).encode(), encode_breaker(b)) for b in breakers])
    alerts = [_alert("fired", "low-1", 1), _alert("fired", "low-2", 2), _alert("cleared", "low-2", 3)]
    await produce_raw(config, ns.alerts, [(None, a) for a in [*alerts, b"not an alert"]])
    code, report = await ledger_cli(config, "doctor", "--json")
    assert code == 1, report
    assert [(f["severity"], f["code"], f["subject"]) for f in report["findings"]] == [
        ("critical", "breaker_latched", "shard 0"),
        ("warning", "alert_firing", "eur-floor: low-1"),
    ]
    latched, firing = report["findings"]
    assert (
        latched["fix"].splitlines()[-1]
        == 'ledger breaker close --shard 0 --reason "verify and reconcile clean"'
    )
    assert "hash chain mismatch" in latched["explanation"]
    assert firing["fix"] == "ledger balance low-1"
