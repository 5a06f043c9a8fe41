"""The chaos report's breaker timeline (deploy/chaos/breakers.py): per fault on one shard, how long
its breaker took to open and to close again; per fleet fault, any breaker it opened."""

from __future__ import annotations

from deploy.chaos.breakers import Change, timeline


def _fault(kind: str, target: int, started: float, healed: float) -> dict[str, object]:
    return {"kind": kind, "target": target, "started_s": started, "healed_s": healed}


def test_a_paused_shard_is_timed_from_onset_to_open_and_from_heal_to_close() -> None:
    faults = [_fault("pause_shard", 2, 10.0, 18.0), _fault("kill_broker", 0, 60.0, 80.0)]
    changes = [
        Change(16.5, 2, "open", "stale", "monitor"),
        Change(23.0, 2, "half_open", "healthy", "monitor"),
        Change(33.5, 2, "closed", "healthy", "monitor"),
    ]
    t = timeline(changes, faults, shards=4)
    assert t["per_fault"][0] == {
        "kind": "pause_shard", "shard": 2, "started_s": 10.0, "healed_s": 18.0,
        "opened_after_s": 6.5, "closed_after_heal_s": 15.5,
    }  # fmt: skip
    assert t["per_fault"][1]["opened"] == []
    assert t["summary"] == {
        "shard_faults": 1, "opened": 1, "opened_within_10s": 1, "closed_within_30s_of_heal": 1,
        "fleet_faults": 1, "fleet_faults_that_opened_a_breaker": 0,
    }  # fmt: skip


def test_a_fleet_fault_that_opens_a_breaker_is_reported_and_a_cut_coordinator_is_not_a_shard() -> None:
    faults = [_fault("restart_postgres_fast", 0, 5.0, 12.0), _fault("cut_kafka", 5, 20.0, 28.0)]
    t = timeline([Change(9.0, 1, "open", "sick", "monitor")], faults, shards=4)
    assert t["per_fault"] == [
        {"kind": "restart_postgres_fast", "started_s": 5.0, "healed_s": 12.0, "opened": [1]}
    ], "a cut of target 5 is coordinator-1 on a 4-shard ledger: no shard's breaker is expected"
    assert t["summary"]["fleet_faults_that_opened_a_breaker"] == 1


def test_a_breaker_that_never_opened_has_no_close_either() -> None:
    t = timeline([], [_fault("kill_shard", 0, 1.0, 9.0)], shards=2)
    assert (t["per_fault"][0]["opened_after_s"], t["per_fault"][0]["closed_after_heal_s"]) == (None, None)
    assert t["summary"]["opened"] == 0


def test_a_close_after_another_shards_fault_began_still_counts() -> None:
    faults = [_fault("pause_shard", 1, 6.0, 14.0), _fault("restart_postgres_fast", 0, 20.0, 28.0)]
    changes = [Change(11.7, 1, "open", "stale", "monitor"), Change(29.4, 1, "closed", "healthy", "monitor")]
    assert timeline(changes, faults, shards=4)["per_fault"][0]["closed_after_heal_s"] == 15.4
