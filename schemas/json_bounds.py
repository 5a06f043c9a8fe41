"""Bounds a JSON payload is held to before any parser reads it: nesting, found in one linear pass.

Both codecs use it (schemas/json_reading.py, schemas/shard_messages.py): a recursive parser given
100,000 open brackets fails deep in its own stack, with a reason nobody can act on.
"""

from __future__ import annotations

import re
from typing import Final

# A JSON string, or an unterminated one running to the end. Possessive, and matching from every
# opening quote, so it reads a payload of quotes and backslashes in one linear pass.
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*+\\?(?:"|\Z)', re.DOTALL)
_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]++")


def too_deep(raw: bytes, max_depth: int) -> bool:
    """Nesting beyond `max_depth` (the top-level object is depth 1), brackets in strings aside."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # too few brackets to nest that deep: every valid message, at no cost
    depth = 0
    for byte in _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw)):
        if byte in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False
