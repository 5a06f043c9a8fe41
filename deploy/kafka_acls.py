"""Who may read and write which topic: the ledger's Kafka ACLs, and applying them idempotently.

aiokafka's admin client has no ACL call; CreateAcls and DescribeAcls go through its request
machinery (version negotiated per connection), to any broker, which forwards them to the KRaft
controller. Every name comes from the Namespace, so each test's prefix gets its own rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from deploy.kafka_principals import CLIENT, COORDINATOR, MONITOR, OPERATOR, shard_principal
from schemas.errors import LedgerError
from schemas.topics import Namespace

log = logging.getLogger(__name__)

# Wire codes of org.apache.kafka.common.resource / acl.
_RESOURCE = {"ANY": 1, "TOPIC": 2, "GROUP": 3, "CLUSTER": 4}
_PATTERN = {"ANY": 1, "LITERAL": 3, "PREFIXED": 4}
_OPERATION = {"ANY": 1, "READ": 3, "WRITE": 4, "DESCRIBE": 8, "IDEMPOTENT_WRITE": 12}
_ALLOW, _ANY_PERMISSION = 3, 1
_SECURITY_DISABLED = 54
_ANY_HOST = "*"


class AclUpdateFailed(LedgerError):
    """The broker refused to list or create an ACL."""

    def __init__(self, what: str, code: int, message: str | None) -> None:
        error = for_code(code)
        super().__init__(f"{what}: {message or error.__name__}")
        self.retriable = bool(error.retriable)


@dataclass(frozen=True, order=True)
class Acl:
    """ALLOW `operation` on a resource to `User:principal` from any host."""

    principal: str
    operation: str
    resource: str
    name: str
    pattern: str = "LITERAL"


def ledger_acls(ns: Namespace, shards: int) -> frozenset[Acl]:
    """The whole rule set of one ledger (see README, Security: who may write what)."""
    p = ns.prefix

    def topic(principal: str, operation: str, name: str, pattern: str = "LITERAL") -> Acl:
        return Acl(principal, operation, "TOPIC", name, pattern)

    def group(principal: str, name: str, pattern: str = "LITERAL") -> Acl:
        return Acl(principal, "READ", "GROUP", name, pattern)

    # Idempotent producers need no IDEMPOTENT_WRITE: since Kafka 2.8 WRITE on any topic allows
    # InitProducerId (KIP-679).
    rules = [
        topic(CLIENT, "WRITE", ns.transfers),
        topic(CLIENT, "READ", ns.results),
        topic(CLIENT, "READ", ns.balances),
        group(CLIENT, f"{p}ledger.client.", "PREFIXED"),
        # Operators can do what payment clients can, and manage accounts.
        topic(OPERATOR, "WRITE", ns.account_commands),
        topic(OPERATOR, "WRITE", ns.transfers),
        topic(OPERATOR, "READ", ns.results),
        topic(OPERATOR, "READ", ns.balances),
        group(OPERATOR, f"{p}ledger.operator.", "PREFIXED"),
        # Operators command the monitor (liquidity rules, breakers) and read what it says.
        topic(OPERATOR, "WRITE", ns.monitor_commands),
        topic(OPERATOR, "READ", ns.alerts),
        topic(OPERATOR, "READ", ns.control),
        topic(COORDINATOR, "READ", ns.transfers),
        topic(COORDINATOR, "READ", ns.account_commands),
        topic(COORDINATOR, "READ", ns.shard_replies),
        topic(COORDINATOR, "WRITE", f"{p}ledger.shard.", "PREFIXED"),
        topic(COORDINATOR, "WRITE", ns.results),
        topic(COORDINATOR, "WRITE", ns.dead_letters),
        group(COORDINATOR, f"{p}ledger.coordinator"),
        topic(COORDINATOR, "READ", ns.control),  # breakers: no new saga on an open shard
        topic(COORDINATOR, "WRITE", ns.telemetry),
        topic(MONITOR, "READ", ns.balances),
        topic(MONITOR, "READ", ns.results),
        topic(MONITOR, "READ", ns.telemetry),
        topic(MONITOR, "READ", ns.monitor_commands),
        # Read too: a restarted monitor rebuilds its episodes and breakers from what it wrote.
        topic(MONITOR, "READ", ns.alerts),
        topic(MONITOR, "READ", ns.control),
        topic(MONITOR, "WRITE", ns.alerts),
        topic(MONITOR, "WRITE", ns.control),
        topic(MONITOR, "WRITE", ns.telemetry),
        group(MONITOR, f"{p}ledger.monitor"),
    ]
    for shard in range(shards):
        me = shard_principal(shard)
        rules += [
            topic(me, "READ", ns.shard_commands(shard)),
            group(me, f"{p}ledger.shard.{shard:02d}"),
            topic(me, "WRITE", ns.shard_replies),
            topic(me, "WRITE", ns.balances),
            topic(me, "WRITE", ns.dead_letters),
            topic(me, "WRITE", ns.telemetry),
        ]
    return frozenset(rules)


async def describe_acls(kafka_args: Mapping[str, Any]) -> frozenset[Acl] | None:
    """Every ALLOW rule the cluster holds; None when it runs no authorizer."""
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30_000)
    await admin.start()
    try:
        return await _describe(admin)
    finally:
        await admin.close()


async def apply_acls(kafka_args: Mapping[str, Any], wanted: Iterable[Acl]) -> list[Acl]:
    """Create the rules of `wanted` the cluster does not hold yet; return them. Rules it holds
    beyond those are left alone (another ledger's, an operator's). A cluster with no authorizer
    gets none, with a warning: there, every client may do everything anyway."""
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30_000)
    await admin.start()
    try:
        held = await _describe(admin)
        if held is None:
            log.warning("Kafka runs no authorizer: ACLs not applied, every client may write every topic")
            return []
        wanted = set(wanted)
        missing = sorted(wanted - held)
        for acl in missing:
            request = CreateAclsRequest(
                _RESOURCE[acl.resource], acl.name, _PATTERN[acl.pattern], f"User:{acl.principal}",
                _ANY_HOST, _OPERATION[acl.operation], _ALLOW,
            )  # fmt: skip
            response = await admin._send_request(request)  # the admin client has no ACL call
            for code, message in response.creation_responses:
                if code:
                    raise AclUpdateFailed(f"cannot create {acl}", code, message)
        if missing:
            await _wait_visible(admin, wanted)
        return missing
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, wanted: set[Acl], within_s: float = 30.0) -> None:
    """Until every broker authorizes by the new rules. The controller records them at once, but a
    broker applies them from the metadata log a moment later: a process started right after
    `ledger init` was refused (ClusterAuthorizationFailedError on InitProducerId, not retriable)."""
    deadline = time.monotonic() + within_s
    for broker in admin._client.cluster.brokers():  # each broker's own view
        while not wanted <= (await _describe(admin, broker.nodeId) or frozenset()):
            if time.monotonic() > deadline:
                raise AclUpdateFailed(f"broker {broker.nodeId} does not show the new ACLs", 7, None)
            await asyncio.sleep(0.2)


async def _describe(admin: AIOKafkaAdminClient, node_id: int | None = None) -> frozenset[Acl] | None:
    any_name: Any = None  # a null string in the filter: any name, principal, host
    request = DescribeAclsRequest(
        _RESOURCE["ANY"], any_name, _PATTERN["ANY"], any_name, any_name, _OPERATION["ANY"], _ANY_PERMISSION
    )
    response = await admin._send_request(request, node_id)  # the admin client has no ACL call
    if response.error_code == _SECURITY_DISABLED:
        return None
    if response.error_code:
        raise AclUpdateFailed("cannot list ACLs", response.error_code, response.error_message)
    names = {v: k for k, v in _OPERATION.items()}
    resources = {v: k for k, v in _RESOURCE.items()}
    patterns = {v: k for k, v in _PATTERN.items()}
    return frozenset(
        Acl(principal.removeprefix("User:"), names.get(op, str(op)), resources.get(rtype, str(rtype)), rname,
            patterns.get(ptype, str(ptype)))
        for rtype, rname, ptype, acls in response.resources
        for principal, _host, op, permission in acls
        if permission == _ALLOW
    )  # fmt: skip
