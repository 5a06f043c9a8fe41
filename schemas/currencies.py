"""ISO 4217 currency codes accounts may use, read from schemas/json/currency.json (defined there once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

JSON_DIR: Final = Path(__file__).parent / "json"

CURRENCIES: Final[frozenset[str]] = frozenset(json.loads((JSON_DIR / "currency.json").read_text())["enum"])
