"""Every command the README shows, run as a user runs it: a subprocess against one `ledger dev up`.

The stack is started once for this module (2 shards, its own home and data folder). Most commands
get the environment a user would export for the stack (`_recorded_env`, built from the files
`dev up` records, independent of `ledger dev env`); `test_commands_find_the_local_stack_*` run
with none. Exit codes are the CLI's contract (`ledger --help`): 0 ok, 1 a check failed, 2 usage
or configuration, 3 not found or rejected, 4 compensated, 75 no result yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.kafka_principals import KafkaCredentials
from deploy.postgres_roles import LedgerRoles, read_passwords, role_dsn
from deploy.stack import ISSUER
from schemas.partitioning import PartitionMap
from schemas.public import FreezeAccount, encode_public
from schemas.topics import Namespace
from tests.engines import REPO

LEDGER = str(Path(sys.executable).with_name("ledger"))
SHARDS = 2
_LEDGER_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "LEDGER_DATABASE_URL", "LEDGER_HOME")


def _bare_env(home: Path) -> dict[str, str]:
    """This process's environment without any ledger's address or credentials."""
    env = {k: v for k, v in os.environ.items() if k not in _LEDGER_VARS and not k.startswith("LEDGER_KAFKA_")}
    return env | {"LEDGER_HOME": str(home), "LEDGER_CACHE_DIR": str(REPO / ".ledger" / "cache")}


def _run(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class DevStack:
    home: Path
    state: dict[str, Any]

    def env(self, principal: str | None) -> dict[str, str]:
        """What a user exports to reach the stack: `principal` on Kafka (none: no credentials), and
        the read-only reader's database role, or the database owner for the admin."""
        e = self.state["endpoints"]
        passwords = read_passwords(Path(e["database_roles_file"]))
        reader = LedgerRoles(Namespace(), SHARDS).reader
        dsn = (
            e["database_url"]
            if principal == "admin"
            else role_dsn(e["database_url"], reader, passwords[reader])
        )
        env = _bare_env(self.home) | {
            "KAFKA_BOOTSTRAP_SERVERS": e["kafka_bootstrap_servers"],
            "LEDGER_DATABASE_URL": dsn,
        }
        if principal is not None:
            credentials = KafkaCredentials.load(Path(self.state["kafka_credentials"]))
            env |= credentials.security(principal).as_env()
        return env

    def ledger(self, *args: str, principal: str | None = "operator") -> subprocess.CompletedProcess[str]:
        return _run(self.env(principal), *args)


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    env = _bare_env(home)
    # Its data in a temporary folder of its own (not under tmp_path: when the tests run as root,
    # PostgreSQL runs as another user, who cannot enter pytest's owner-only folders).
    up = _run(env, "dev", "up", "--shards", str(SHARDS))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield DevStack(home, json.loads((home / "stack.json").read_text()))
    finally:
        down = _run(env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert "coordinator" in down.stdout
    assert _run(env, "dev", "status").returncode == 3, "no stack is recorded after `dev down`"


def _accounts_on(shard: int, prefix: str, count: int) -> list[str]:
    """Account ids of this test run that the stack's partition map puts on `shard`."""
    pmap = PartitionMap.initial(SHARDS)
    found = []
    for n in range(1000):
        candidate = f"{prefix}-{uuid.uuid4().hex[:8]}-{n}"
        if pmap.shard_for(candidate) == shard:
            found.append(candidate)
            if len(found) == count:
                return found
    raise AssertionError("no account id found for the shard")


@dataclass(frozen=True)
class Accounts:
    issuer: str
    payer: str  # funded with 10_000 EUR cents, on shard 0
    payee: str  # on shard 1
    frozen: str  # on shard 1, frozen
    empty: str  # never funded


async def _freeze(state: dict[str, Any], account_id: str) -> None:
    """Freeze an account through the public topic (the README shows no command for it)."""
    kafka = {
        "bootstrap_servers": state["endpoints"]["kafka_bootstrap_servers"],
        **KafkaCredentials.load(Path(state["kafka_credentials"])).security("operator").client_args(),
    }
    command = FreezeAccount(str(uuid.uuid4()), account_id)
    results = Namespace().results
    consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(**kafka, acks="all")
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(results, p) for p in await producer.partitions_for(results)])
        await producer.send_and_wait(
            Namespace().account_commands, encode_public(command), key=account_id.encode()
        )
        async with asyncio.timeout(60):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    if any(
                        json.loads(r.value or b"{}").get("command_id") == command.command_id for r in records
                    ):
                        return
    finally:
        await producer.stop()
        await consumer.stop()


@pytest.fixture(scope="module")
def accounts(dev_stack: DevStack) -> Accounts:
    issuer = ISSUER  # one of the issuance accounts `dev up` starts its coordinator with
    payer, empty = _accounts_on(0, "payer", 2)
    payee, frozen = _accounts_on(1, "payee", 2)
    opened = dev_stack.ledger("open-account", issuer, "--currency", "EUR", "--overdraft-limit", str(10**12))
    assert opened.returncode in (0, 3), opened.stderr  # 3: opened by an earlier test of this stack
    for account in (payer, payee, frozen, empty):
        made = dev_stack.ledger("open-account", account, "--currency", "EUR")
        assert made.returncode == 0, made.stdout + made.stderr
    funded = dev_stack.ledger("transfer", "--from", issuer, "--to", payer, "--amount", "10000",
                              "--currency", "EUR", "--wait")  # fmt: skip
    assert funded.returncode == 0, funded.stdout + funded.stderr
    asyncio.run(_freeze(dev_stack.state, frozen))
    return Accounts(issuer, payer, payee, frozen, empty)


def _transfer(
    stack: DevStack, debit: str, credit: str, amount: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    return stack.ledger(
        "transfer", "--from", debit, "--to", credit, "--amount", str(amount), "--currency", "EUR", *extra
    )


# --- the client commands -------------------------------------------------------------------------


def test_open_account_waits_for_its_answer(dev_stack: DevStack) -> None:
    (account,) = _accounts_on(1, "opened", 1)
    opened = dev_stack.ledger("open-account", account, "--currency", "EUR")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert json.loads(opened.stdout)["outcome"] == "done"
    again = dev_stack.ledger("open-account", account, "--currency", "EUR")
    assert again.returncode == 3, again.stdout + again.stderr  # rejected: it exists
    assert json.loads(again.stdout)["outcome"] == "rejected"


def test_transfer_wait_exits_0_when_completed(dev_stack: DevStack, accounts: Accounts) -> None:
    done = _transfer(dev_stack, accounts.payer, accounts.payee, 150, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["state"] == "completed"


def test_transfer_wait_exits_3_when_rejected(dev_stack: DevStack, accounts: Accounts) -> None:
    rejected = _transfer(dev_stack, accounts.empty, accounts.payee, 1, "--wait")
    assert rejected.returncode == 3, rejected.stdout + rejected.stderr
    assert json.loads(rejected.stdout)["reason"] == "insufficient_funds"


def test_transfer_wait_exits_4_when_compensated(dev_stack: DevStack, accounts: Accounts) -> None:
    # Reserved on shard 0, refused by the frozen account on shard 1, then released.
    undone = _transfer(dev_stack, accounts.payer, accounts.frozen, 10, "--wait")
    assert undone.returncode == 4, undone.stdout + undone.stderr
    assert json.loads(undone.stdout) | {"reason": "account_frozen", "state": "compensated"} == json.loads(
        undone.stdout
    )


def test_transfer_wait_exits_75_without_a_result_in_time(dev_stack: DevStack, accounts: Accounts) -> None:
    late = _transfer(dev_stack, accounts.payer, accounts.payee, 1, "--wait", "--timeout", "0")
    assert late.returncode == 75, late.stdout + late.stderr
    assert "no result" in late.stderr


def test_transfer_without_wait_only_sends(dev_stack: DevStack, accounts: Accounts) -> None:
    tid = str(uuid.uuid4())
    sent = _transfer(dev_stack, accounts.payer, accounts.payee, 1, "--id", tid)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"transfer_id": tid, "sent": True}


def test_a_hold_posted_for_less_voided_and_expired_with_its_exit_codes(
    dev_stack: DevStack, accounts: Accounts
) -> None:
    (holder,), (shop,) = _accounts_on(0, "holder", 1), _accounts_on(1, "shop", 1)
    for account in (holder, shop):
        assert dev_stack.ledger("open-account", account, "--currency", "EUR").returncode == 0
    assert _transfer(dev_stack, accounts.issuer, holder, 1_000, "--wait").returncode == 0

    def hold(amount: int, pending: str) -> str:
        held = _transfer(dev_stack, holder, shop, amount, "--pending", pending, "--wait")
        assert held.returncode == 0, held.stdout + held.stderr  # 0: the hold is in place
        assert json.loads(held.stdout)["state"] == "pending"
        return str(json.loads(held.stdout)["transfer_id"])

    card = hold(600, "10m")
    shown = json.loads(dev_stack.ledger("balance", holder, principal=None).stdout)
    assert (shown["posted"], shown["pending_debits"], shown["available"]) == (1_000, 600, 400)
    posted = dev_stack.ledger("post", card, "--amount", "450", "--wait", principal="client")
    assert posted.returncode == 0, posted.stdout + posted.stderr
    assert json.loads(posted.stdout)["state"] == "completed"
    late = dev_stack.ledger("void", card, "--wait", principal="client")
    assert late.returncode == 3, late.stdout + late.stderr
    assert json.loads(late.stdout)["reason"] == "pending_transfer_already_posted"

    released = dev_stack.ledger("void", hold(100, "10m"), "--wait", principal="client")
    assert released.returncode == 0, released.stdout + released.stderr
    assert json.loads(released.stdout)["state"] == "voided"

    lapsing = hold(50, "1s")
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    while json.loads(dev_stack.ledger("status", lapsing, principal=None).stdout)["state"] == "pending":
        assert dt.datetime.now(dt.UTC) < deadline, "the hold never expired"
    expired = dev_stack.ledger("post", lapsing, "--wait", principal="client")
    assert expired.returncode == 5, expired.stdout + expired.stderr
    assert json.loads(expired.stdout)["reason"] == "pending_transfer_expired"
    final = json.loads(dev_stack.ledger("balance", holder, principal=None).stdout)
    assert (final["posted"], final["pending_debits"], final["available"]) == (550, 0, 550)
    assert json.loads(dev_stack.ledger("balance", shop, principal=None).stdout)["pending_credits"] == 0


# --- the read commands, as the read-only database role --------------------------------------------


def test_status_of_a_transfer_and_of_an_unknown_id(dev_stack: DevStack, accounts: Accounts) -> None:
    tid = str(uuid.uuid4())
    assert _transfer(dev_stack, accounts.payer, accounts.payee, 2, "--id", tid, "--wait").returncode == 0
    found = dev_stack.ledger("status", tid)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["state"] == "completed"
    listed = dev_stack.ledger("transfers", "--state", "completed", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    assert tid in {t["transfer_id"] for t in json.loads(listed.stdout)}
    unknown = dev_stack.ledger("status", str(uuid.uuid4()))
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert "no transfer" in unknown.stderr


def test_balance_now_at_a_seq_at_a_time_and_unknown(dev_stack: DevStack, accounts: Accounts) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    account = _accounts_on(0, "balance", 1)[0]
    assert dev_stack.ledger("open-account", account, "--currency", "EUR").returncode == 0
    assert _transfer(dev_stack, accounts.issuer, account, 700, "--wait").returncode == 0
    now = dev_stack.ledger("balance", account)
    assert now.returncode == 0, now.stderr
    assert json.loads(now.stdout) | {"posted": 700, "available": 700, "currency": "EUR"} == json.loads(
        now.stdout
    )
    at_time = dev_stack.ledger("balance", account, "--at", before.strftime("%Y-%m-%dT%H:%M:%S%z"))
    assert at_time.returncode == 0, at_time.stderr
    assert json.loads(at_time.stdout)["posted"] == 0
    credited_at = json.loads(now.stdout)["as_of_seq"]  # the shard's journal seq of the credit
    for seq, posted in ((credited_at, 700), (credited_at - 1, 0)):
        at_seq = dev_stack.ledger("balance", account, "--at-seq", str(seq))
        assert at_seq.returncode == 0, at_seq.stderr
        assert json.loads(at_seq.stdout)["posted"] == posted
    unknown = dev_stack.ledger("balance", "nobody-" + uuid.uuid4().hex[:8])
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert "account_not_found" in unknown.stdout + unknown.stderr


@pytest.mark.parametrize("command", [("reconcile",), ("verify",), ("replay",)])
def test_checks_pass_on_a_healthy_ledger(
    dev_stack: DevStack, accounts: Accounts, command: tuple[str, ...]
) -> None:
    checked = dev_stack.ledger(*command, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert all(r["ok"] for r in report) if isinstance(report, list) else report["ok"]


def test_outbox_parked_lists_nothing(dev_stack: DevStack) -> None:
    parked = dev_stack.ledger("outbox", "parked")
    assert parked.returncode == 0, parked.stderr
    assert parked.stdout.strip() == "no parked outbox rows"


def test_acl_apply_as_the_admin_adds_nothing_twice(dev_stack: DevStack) -> None:
    applied = dev_stack.ledger("acl", "apply", "--shards", str(SHARDS), principal="admin")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().endswith("(0 created)")  # `dev up` ran init, which applied them


# --- finding the local stack -------------------------------------------------------------------------


def test_dev_status_reports_a_healthy_stack(dev_stack: DevStack) -> None:
    status = _run(_bare_env(dev_stack.home), "dev", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["health"] == {"kafka": "ok", "postgres": "ok"}


def test_doctor_finds_nothing_wrong_with_a_healthy_stack(dev_stack: DevStack) -> None:
    doctor = _run(_bare_env(dev_stack.home), "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["findings"] == []


def test_commands_find_the_local_stack_without_any_setting(dev_stack: DevStack, accounts: Accounts) -> None:
    env = _bare_env(dev_stack.home)
    sent = _run(env, "transfer", "--from", accounts.payer, "--to", accounts.payee, "--amount", "3",
                "--currency", "EUR", "--wait")  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    balance = _run(env, "balance", accounts.payer)
    assert balance.returncode == 0, balance.stderr
    assert _run(env, "verify").returncode == 0
    # A variable still wins over the recorded stack.
    elsewhere = _run(env | {"LEDGER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "verify")  # fmt: skip
    assert elsewhere.returncode != 0


def test_dev_env_prints_exports_a_shell_can_eval(dev_stack: DevStack, accounts: Accounts) -> None:
    env = _bare_env(dev_stack.home)
    printed = _run(env, "dev", "env")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines
    assert all(line.startswith("export ") for line in lines)
    exported = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert exported["LEDGER_KAFKA_USERNAME"] == "operator"  # the default: a client that may open accounts
    assert "LEDGER_MESSAGE_KEYS" not in exported
    ledger = shlex.quote(LEDGER)
    script = f'eval "$({ledger} dev env)" && unset LEDGER_HOME && {ledger} balance {accounts.payer}'
    shell = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert shell.returncode == 0, shell.stdout + shell.stderr
    assert json.loads(shell.stdout)["account_id"] == accounts.payer
    admin = dict(
        shlex.split(line)[1].split("=", 1)
        for line in _run(env, "dev", "env", "--as", "admin").stdout.splitlines()
    )
    assert admin["LEDGER_KAFKA_USERNAME"] == "admin"
    assert _run(env, "dev", "env", "--as", "nobody").returncode == 2


def test_dev_env_without_a_stack_says_so(tmp_path: Path) -> None:
    printed = _run(_bare_env(tmp_path), "dev", "env")
    assert printed.returncode == 3
    assert "ledger dev up" in printed.stderr
