"""A small message read against its JSON Schema file, in the order every reader here uses: size,
nesting, JSON, then the schema, each refusal raised as the caller's error with what was wrong.
For the read side's messages (balances, telemetry): a few per second per reader, where a
validator's 50 µs does not matter and the schema file itself is the one definition."""

from __future__ import annotations

import json
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas.currencies import JSON_DIR
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep


class JsonContract:
    def __init__(self, schema_file: str, max_bytes: int, max_depth: int) -> None:
        self.validator = Draft202012Validator(
            _schema(schema_file),
            registry=Registry().with_resource(
                "currency.json", Resource.from_contents(_schema("currency.json"))
            ),
        )
        self.max_bytes, self.max_depth = max_bytes, max_depth

    def read(self, payload: bytes, refused: type[LedgerError]) -> Any:
        """The JSON document `payload` holds, valid against the schema, or `refused(why)`."""
        if len(payload) > self.max_bytes:
            raise refused(f"{len(payload)} bytes, more than {self.max_bytes}")
        if too_deep(payload, self.max_depth):
            raise refused(f"nested deeper than {self.max_depth}")
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise refused(f"not JSON: {e}") from None
        error = next(iter(self.validator.iter_errors(document)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the record"
            raise refused(f"{where}: {error.message[:200]}")
        return document


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema
