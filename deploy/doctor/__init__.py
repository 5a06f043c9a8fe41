"""`ledger doctor`: facts.py (the snapshot), rules.py (pure judgement), gather.py (I/O), command.py (CLI)."""
