"""The `ledger` commands' exit codes: one rule for all (shown by `ledger --help`)."""

from typing import Final

OK: Final = 0
CHECK_FAILED: Final = 1
"""A check found a problem: reconcile, verify, replay, doctor, demo, bench, chaos, an unhealthy stack."""
USAGE: Final = 2
"""Bad arguments or configuration (also what a non-retriable ledger error ends with)."""
NOT_FOUND: Final = 3
"""No such transfer, account or local stack; or the command was rejected."""
COMPENSATED: Final = 4
"""A transfer whose posted leg was undone."""
TEMPFAIL: Final = 75
"""EX_TEMPFAIL: no result yet, or a retriable error; trying again may succeed."""

RULE: Final = (
    "Exit codes: 0 ok; 1 a check found a problem (reconcile, verify, replay, doctor, an unhealthy "
    "stack); "
    "2 usage or configuration error; 3 not found (transfer, account, local stack) or rejected; "
    "4 compensated; 75 no result yet or a temporary failure (try again)."
)
