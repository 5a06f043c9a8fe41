"""The ledger's monitor: the read side that watches balances and raises alerts (issue 16)."""
