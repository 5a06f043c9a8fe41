"""The one root of every error the ledger raises on purpose.

Each error says whether retrying the same operation can succeed. Business rejections are never
retriable; infrastructure errors usually are.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of all ledger errors."""

    retriable: bool = False


class ConfigurationError(LedgerError):
    """A setting is missing or malformed; fix the configuration, do not retry."""

    retriable = False


class Stalled(LedgerError):
    """Work made no progress within its bound (a connection wedged by a fault, say). Retriable: the
    process's outermost loop starts its work again, from fresh connections."""

    retriable = True


class StoreUnavailable(LedgerError):
    """A store could not be reached or its transaction failed for a transient reason. Here, not in
    the PostgreSQL module that raises it, so services catch it without importing a driver."""

    retriable = True
