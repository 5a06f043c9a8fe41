"""Ids derived from other ids: the same input always names the same message, so a re-sent command,
reply or result is recognisably the same one.

`url_uuid5(name)` is exactly `str(uuid.uuid5(uuid.NAMESPACE_URL, name))`, computed without building
UUID objects: it runs a few times per transfer on the hot path, where the standard library's
version was 7-13% of a coordinator's CPU flat out (py-spy, issue 14).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

_URL: Final = uuid.NAMESPACE_URL.bytes


def url_uuid5(name: str) -> str:
    digest = bytearray(hashlib.sha1(_URL + name.encode()).digest()[:16])  # noqa: S324 - RFC 4122 uuid5
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
