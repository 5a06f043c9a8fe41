"""The hot-path uuid5 is the standard library's, digit for digit."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from coordinator.saga.transfer_saga import command_id
from coordinator.service.coordinator import result_id
from schemas.ids import url_uuid5
from schemas.shard_messages import reply_id


@given(st.text(max_size=200))
def test_url_uuid5_is_uuid5_of_the_url_namespace(name: str) -> None:
    assert url_uuid5(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def test_the_derived_ids_did_not_change() -> None:
    t = "9a0e3c1b-2f4d-4e5a-8b6c-7d8e9f0a1b2c"
    assert command_id(t, "posting") == str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:saga:{t}:posting"))
    assert result_id(t, "ab") == str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:result:{t}:ab"))
    assert reply_id(t) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:reply:{t}"))
