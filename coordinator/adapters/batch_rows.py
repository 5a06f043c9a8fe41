"""A linked batch's saga state as the JSON its transfers row keeps (column batch_state)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from coordinator.saga.batch_saga import Batch, BatchLeg, BatchState


def to_json(state: BatchState) -> str:
    body = asdict(state)
    body["waiting"] = sorted(state.waiting)
    return orjson.dumps(body).decode()


def from_json(raw: str | bytes) -> BatchState:
    body: dict[str, Any] = orjson.loads(raw)
    batch = body.pop("batch")
    legs = tuple(BatchLeg(**leg) for leg in batch.pop("legs"))
    return BatchState(Batch(legs=legs, **batch), waiting=frozenset(body.pop("waiting")), **body)
