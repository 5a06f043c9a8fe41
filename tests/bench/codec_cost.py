"""CPU per call of the codecs on the coordinator's hot path: public commands and shard messages.

    .venv/bin/python -m tests.bench.codec_cost [--calls 20000] [--repeats 5]

Each figure is process CPU time (time.process_time) over `calls` calls, best of `repeats`, divided
by `calls`. Not a test: cost is reported, never asserted (issue 14, item 3, measured it).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from schemas.public import PublicRejection
from schemas.public_parse import parse_account_command, parse_transfer
from schemas.shard_messages import ReserveFunds, ShardReply, decode_command, decode_reply, encode, reply_id
from tests.bad_inputs import TEST_MAX_AMOUNT, encoded, transfer, with_literal

TID = "6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e"
MID = "0f1e2d3c-4b5a-4968-8776-655443322110"

TYPICAL = encoded(transfer("typical", debit_account="acct-000123", credit_account="acct-004567", amount=1050,
                           metadata={"order": "A-1042", "channel": "api"}))  # fmt: skip
BAD = {
    "bad: amount 0": encoded(transfer("zero", amount=0)),
    "bad: unknown currency": encoded(transfer("currency", currency="ZZZ")),
    "bad: unknown field": encoded(transfer("field", note="hi")),
    "bad: amount 1000.0": with_literal("float", "amount", "1000.0"),
    "bad: malformed JSON": TYPICAL[:60],
}
OPEN_ACCOUNT = encoded({"type": "OpenAccount", "v": 1, "command_id": MID, "account_id": "acct-000123",
                        "currency": "EUR"})  # fmt: skip
COMMAND = encode(ReserveFunds(MID, TID, "acct-000123", 1050, "EUR"))
REPLY = encode(
    ShardReply(reply_id(MID), MID, "ReserveFunds", 3, "acct-000123", TID, "funds_reserved", None, 42)
)


def _rejected(parse: Callable[[bytes], object], raw: bytes) -> Callable[[], None]:
    def call() -> None:
        try:
            parse(raw)
        except PublicRejection:
            return
        raise AssertionError("expected a rejection")

    return call


def cases() -> dict[str, Callable[[], object]]:
    def transfer_parser(raw: bytes) -> object:
        return parse_transfer(raw, max_amount=TEST_MAX_AMOUNT)

    found: dict[str, Callable[[], object]] = {
        "parse_transfer: valid typical": lambda: transfer_parser(TYPICAL),
        **{f"parse_transfer: {name}": _rejected(transfer_parser, raw) for name, raw in BAD.items()},
        "parse_account_command: OpenAccount": lambda: parse_account_command(OPEN_ACCOUNT),
        "decode_command: ReserveFunds": lambda: decode_command(COMMAND),
        "decode_reply: ShardReply": lambda: decode_reply(REPLY),
    }
    return found


def cpu_per_call(call: Callable[[], object], calls: int, repeats: int) -> float:
    """Best of `repeats` runs, in microseconds of process CPU per call."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, time.process_time() - start)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, call in cases().items():
        call()  # warm: regex caches, first-use imports
        print(f"{name:<44} {cpu_per_call(call, args.calls, args.repeats):8.2f} µs CPU/call")


if __name__ == "__main__":
    main()
