"""Account commands (open, freeze, unfreeze, close) on the coordinator.

Each command goes to its account's shard as one shard command, under the command's id; it starts
no saga, since the shard's inbox dedupes it by that id. Each answer (the shard's reply, or the
coordinator's own refusal) becomes one AccountResult whose id is fixed by the command, so an answer
sent again is the same message.
"""

from __future__ import annotations

from typing import Final

from coordinator.service.batch import BatchChanges
from infra.outbox import OutboxMessage
from infra.records import Origin
from infra.tracing import current_headers
from schemas.ids import url_uuid5
from schemas.partitioning import PartitionMap
from schemas.public import (
    AccountCommand,
    AccountResult,
    CloseAccount,
    FreezeAccount,
    OpenAccountRequest,
    PublicRejection,
    UnfreezeAccount,
    encode_public,
)
from schemas.shard_messages import ChangeAccountStatus, OpenAccount, ShardCommand, ShardReply, encode
from schemas.topics import Namespace

STATUS_SET_BY: Final = {FreezeAccount: "frozen", UnfreezeAccount: "active", CloseAccount: "closed"}
COMMAND_TYPES: Final = (OpenAccountRequest, *STATUS_SET_BY)


def account_result_id(command_id: str) -> str:
    """An account result's id: the same command always gets the same result message."""
    return url_uuid5(f"ledger:account-result:{command_id}")


class AccountCommands:
    """The coordinator's handlers for account commands and for the shards' answers to them."""

    def __init__(
        self,
        namespace: Namespace,
        partition_map: PartitionMap,
        *,
        issuance_accounts: frozenset[str],
        max_customer_overdraft: int,
    ) -> None:
        self.ns = namespace
        self.pmap = partition_map
        self.issuance_accounts = issuance_accounts
        self.max_customer_overdraft = max_customer_overdraft

    def on_command(self, changes: BatchChanges, cmd: AccountCommand, origin: Origin, now: int) -> None:
        shard_command: ShardCommand
        if isinstance(cmd, OpenAccountRequest):
            if not self._may_have(cmd.account_id, cmd.overdraft_limit):
                self._answer(changes, cmd.command_id, cmd.account_id, "overdraft_not_allowed")
                return
            shard_command = OpenAccount(
                cmd.command_id, cmd.account_id, cmd.currency, cmd.overdraft_limit, cmd.metadata
            )
        else:
            shard_command = ChangeAccountStatus(cmd.command_id, cmd.account_id, STATUS_SET_BY[type(cmd)])
        topic = self.ns.shard_commands(self.pmap.shard_for(cmd.account_id))
        changes.outbox.append(
            OutboxMessage(topic, cmd.account_id.encode(), encode(shard_command), current_headers())
        )

    def _may_have(self, account_id: str, overdraft_limit: int) -> bool:
        """Overdraft policy: issuance accounts (where money enters the ledger) may have any limit,
        every other account at most the customers' maximum."""
        return account_id in self.issuance_accounts or overdraft_limit <= self.max_customer_overdraft

    def on_reply(self, changes: BatchChanges, reply: ShardReply) -> None:
        """A shard's answer to an account command (already deduped by the inbox)."""
        self._answer(changes, reply.in_reply_to, reply.account_id, reply.reason if reply.rejected else None)

    def on_rejection(self, changes: BatchChanges, rejection: PublicRejection) -> None:
        """An account command that could not be read as sent, but names its command id."""
        assert rejection.command_id is not None  # else the edge dead-lettered it
        self._answer(changes, rejection.command_id, rejection.account_id, rejection.reason)

    def _answer(
        self, changes: BatchChanges, command: str, account_id: str | None, reason: str | None
    ) -> None:
        """An account command's answer: `done`, or `rejected` with `reason`."""
        outcome = "rejected" if reason else "done"
        result = AccountResult(account_result_id(command), command, account_id, outcome, reason)
        changes.outbox.append(
            OutboxMessage(self.ns.results, command.encode(), encode_public(result), current_headers())
        )
