"""The chaos workload's latency (send -> first result), by when each transfer was sent: in calm,
during a fault, and, during a fault on one shard, for the transfers that touch only other shards.
That last window is the breakers' promise: a sick shard isolated, the healthy ones keep their
calm-run latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

CALM = "calm"
DURING_FAULTS = "during_faults"
OTHER_SHARDS = "other_shards_in_shard_faults"


@dataclass(frozen=True)
class FaultWindow:
    started_s: float
    healed_s: float
    shard: int | None
    """The one shard it hit; None for a fault of shared parts (brokers, PostgreSQL, coordinators)."""


def latency_by_window(
    sent_s: Mapping[str, float],
    took_ms: Mapping[str, int],
    shards_of: Mapping[str, frozenset[int]],
    faults: Sequence[FaultWindow],
) -> dict[str, dict[str, int]]:
    """p50, p99, max and count per window. `sent_s`: transfer id -> seconds from the run's start;
    `took_ms`: id -> send to first result (unanswered ids have none); `shards_of`: the shards each
    transfer touches (an id missing there counts in no other-shards window)."""
    found: dict[str, HdrHistogram] = {}
    for transfer_id, sent in sent_s.items():
        if (took := took_ms.get(transfer_id)) is None:
            continue
        hit = [f for f in faults if f.started_s <= sent <= f.healed_s]
        windows = [DURING_FAULTS if hit else CALM]
        touched = shards_of.get(transfer_id)
        if touched and any(f.shard is not None and f.shard not in touched for f in hit):
            windows.append(OTHER_SHARDS)
        for window in windows:
            found.setdefault(window, HdrHistogram(1, 3_600_000, 3)).record_value(max(1, took))
    return {
        window: {"n": h.get_total_count(), "p50": h.get_value_at_percentile(50),
                 "p99": h.get_value_at_percentile(99), "max": h.get_max_value()}
        for window, h in found.items()
    }  # fmt: skip
