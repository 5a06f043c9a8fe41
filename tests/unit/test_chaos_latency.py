"""The chaos report's latency windows: calm, during faults, and other shards during a one-shard fault."""

from __future__ import annotations

from deploy.chaos.latency import CALM, DURING_FAULTS, OTHER_SHARDS, FaultWindow, latency_by_window


def test_a_transfer_away_from_the_faulted_shard_counts_in_the_other_shards_window_too() -> None:
    faults = [FaultWindow(10.0, 20.0, shard=1), FaultWindow(30.0, 40.0, shard=None)]
    sent = {"calm": 5.0, "on-sick": 12.0, "elsewhere": 15.0, "fleet": 35.0, "unanswered": 16.0}
    took = {"calm": 40, "on-sick": 9_000, "elsewhere": 50, "fleet": 3_000}
    shards = {
        "calm": frozenset({0, 1}), "on-sick": frozenset({1, 2}), "elsewhere": frozenset({0, 2}),
        "fleet": frozenset({0}), "unanswered": frozenset({3}),
    }  # fmt: skip
    found = latency_by_window(sent, took, shards, faults)
    assert found[CALM] == {"n": 1, "p50": 40, "p99": 40, "max": 40}
    assert found[DURING_FAULTS]["n"] == 3
    assert found[OTHER_SHARDS] == {"n": 1, "p50": 50, "p99": 50, "max": 50}, (
        "neither the sick shard nor a fleet fault"
    )
