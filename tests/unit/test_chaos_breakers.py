"""The chaos report's breaker timeline (deploy/chaos/breakers.py): per fault on one shard, how long
its breaker took to open and to close again; per fleet fault, any breaker it opened."""

from __future__ import annotations

from typing import cast

from deploy.chaos.breakers import AlertChange, BreakerWatch, Change, detections, timeline
from infra.config import LedgerConfig
from schemas.breaker import BY_MONITOR, CLOSED, OPEN, BreakerState, encode_breaker


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
        "corrupted": 0, "corrupted_isolated_and_alerted": 0,
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


def _alert(at: float, shard: int, state: str, check: str = "hash_chain") -> AlertChange:
    return AlertChange(at, shard, "divergence", check, state, "critical", "seq 41")


def test_a_corrupted_shard_is_isolated_and_alerted_while_corrupted_then_closed_by_the_operator() -> None:
    faults = [_fault("corrupt_shard", 3, 20.0, 25.0)]
    changes = [
        Change(22.4, 3, "open", "divergence: hash_chain seq 41", "monitor", latched=True),
        Change(29.0, 3, "closed", "chaos: row restored, chain verified", "operator"),
    ]
    alerts = [_alert(22.3, 3, "fired"), _alert(27.1, 3, "cleared")]
    t = timeline(changes, faults, shards=4, alerts=alerts)
    assert t["per_fault"][0] == {
        "kind": "corrupt_shard", "shard": 3, "started_s": 20.0, "healed_s": 25.0,
        "opened_after_s": 2.4, "closed_after_heal_s": 4.0,
        "alert_fired_after_s": 2.3, "alert_cleared_after_heal_s": 2.1, "isolated_and_alerted": True,
    }  # fmt: skip
    assert t["summary"]["corrupted"] == 1
    assert t["summary"]["corrupted_isolated_and_alerted"] == 1
    assert detections(t) == {"D1": []}
    assert [a["state"] for a in t["alerts"]] == ["fired", "cleared"]


def test_a_corrupted_shard_not_latched_or_not_alerted_within_its_window_is_a_detection_failure() -> None:
    faults = [
        _fault("corrupt_shard", 1, 10.0, 15.0),  # opened, but not latched: the anomaly detector's
        _fault("corrupt_shard", 2, 30.0, 35.0),  # latched and alerted only after the row was restored
        _fault("corrupt_shard", 0, 50.0, 55.0),  # latched, alerted about another check
    ]
    changes = [
        Change(12.0, 1, "open", "stale", "monitor"),
        Change(36.0, 2, "open", "divergence", "monitor", latched=True),
        Change(52.0, 0, "open", "divergence", "monitor", latched=True),
    ]
    alerts = [_alert(12.0, 1, "fired"), _alert(36.0, 2, "fired"), _alert(52.0, 0, "fired", "reconcile")]
    t = timeline(changes, faults, shards=4, alerts=alerts)
    assert [p["isolated_and_alerted"] for p in t["per_fault"]] == [False, False, False]
    assert t["per_fault"][0]["opened_after_s"] is None, "only a latched open isolates a corrupted shard"
    found = detections(t)["D1"]
    assert len(found) == 3
    assert "shard 2 corrupted 30.0 s to 35.0 s" in found[1]


def test_other_faults_have_no_detection_to_make() -> None:
    t = timeline([], [_fault("pause_shard", 0, 1.0, 9.0)], shards=2)
    assert detections(t) == {"D1": []}
    assert t["summary"]["corrupted"] == 0


def test_an_open_a_one_shard_fault_explains_is_not_charged_to_a_fleet_fault_beside_it() -> None:
    # Seen in a short run: the controller's kill healed at 104.0, a corruption of shard 3 began
    # then and latched its breaker at 106.4, within the 10 s a fleet fault's opens are looked for;
    # a slow shard 0 opened its breaker just after its heal, while PostgreSQL was restarting.
    faults = [
        _fault("slow_shard", 0, 87.4, 92.9),
        _fault("restart_postgres_immediate", 0, 92.9, 98.8),
        _fault("kill_controller", 0, 98.8, 104.0),
        _fault("corrupt_shard", 3, 104.0, 109.0),
    ]
    changes = [
        Change(94.1, 0, "open", "sick", "monitor"),
        Change(110.0, 1, "open", "stale", "monitor"),  # unexplained: the controller's
        Change(106.4, 3, "open", "diverged", "monitor", latched=True),
    ]
    t = timeline(changes, faults, shards=4)
    assert [p.get("opened") for p in t["per_fault"]] == [None, [], [1], None]
    assert t["summary"]["fleet_faults_that_opened_a_breaker"] == 1


def test_the_watch_knows_when_every_breaker_it_saw_is_closed() -> None:
    watch = BreakerWatch(cast(LedgerConfig, None), 0.0)
    assert watch.all_closed(), "none seen: none open"
    assert watch.closed.is_set()

    def read(at_s: float, shard: int, state: str, seq: int) -> None:
        raw = encode_breaker(BreakerState(shard, state, False, "test", BY_MONITOR, seq, int(at_s * 1000)))
        watch._read(True, raw, at_s)

    read(1.0, 0, OPEN, 1)
    read(2.0, 1, OPEN, 1)
    read(9.0, 0, CLOSED, 2)
    assert not watch.all_closed()
    assert not watch.closed.is_set()
    read(12.0, 1, CLOSED, 2)
    assert watch.all_closed()
    assert watch.closed.is_set()


def test_a_killed_relay_is_a_fault_on_its_shard() -> None:
    """Seen in ledger chaos (seed 3): relay 1 killed, shard 1's replies could not get out, and its
    breaker opened; the report listed the relay kill as neither a shard's fault nor a fleet's."""
    faults = [_fault("kill_relay", 1, 48.0, 56.0)]
    changes = [Change(54.6, 1, "open", "sick", "monitor"), Change(71.3, 1, "closed", "healthy", "monitor")]
    (fault,) = timeline(changes, faults, shards=4)["per_fault"]
    assert (fault["shard"], fault["opened_after_s"], fault["closed_after_heal_s"]) == (1, 6.6, 15.3)


def test_a_corrupted_shard_counts_as_caught_once_latched_and_alerted_since_its_onset() -> None:
    watch = BreakerWatch(cast(LedgerConfig, None), 0.0)
    watch.changes.append(Change(5.0, 1, OPEN, "diverged", BY_MONITOR, latched=True))  # an earlier one
    watch.alerts.append(_alert(5.1, 1, "fired"))
    assert not watch.isolated_since(1, onset_s=10.0)
    watch.changes.append(Change(12.0, 1, OPEN, "sick", BY_MONITOR))  # not latched: not the audit's
    watch.alerts.append(_alert(12.5, 1, "fired"))
    assert not watch.isolated_since(1, onset_s=10.0)
    watch.changes.append(Change(13.0, 1, OPEN, "diverged", BY_MONITOR, latched=True))
    assert watch.isolated_since(1, onset_s=10.0)
    assert not watch.isolated_since(2, onset_s=10.0)
