"""The chaos suite's pure parts: the seeded schedule, recovery times, which Kafka node is the
active controller, and a workload whose hot accounts do not run dry."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

from deploy.bench.workload import Workload, WorkloadSettings
from deploy.chaos.run import recovery
from deploy.chaos.schedule import FAULT_KINDS, every_kind_once_s, plan
from deploy.kafka_local import LocalKafka
from schemas.partitioning import PartitionMap

TARGETS = {"kill_shard": 4, "kill_broker": 2, "cut_kafka": 6}


def test_every_kind_comes_once_before_any_comes_twice_and_a_seed_repeats_its_schedule() -> None:
    faults = plan(7, 400, 5, 2, FAULT_KINDS, TARGETS)
    first = [f.kind for f in faults[: len(FAULT_KINDS)]]
    assert sorted(first) == sorted(FAULT_KINDS)
    assert faults == plan(7, 400, 5, 2, FAULT_KINDS, TARGETS)
    assert faults != plan(8, 400, 5, 2, FAULT_KINDS, TARGETS)
    assert all(b.at_s - a.at_s == 7 for a, b in itertools.pairwise(faults))
    # Brokers other than the controller are killed in turn, so that each is.
    assert [f.target for f in faults if f.kind == "kill_broker"][:4] == [0, 1, 0, 1]
    assert all(0 <= f.target < 6 for f in faults if f.kind == "cut_kafka")


def test_the_shortest_run_that_brings_every_kind_once_is_every_kind_once_s() -> None:
    shortest = every_kind_once_s(len(FAULT_KINDS), fault_s=5, calm_s=2)
    assert shortest == 2 + 7 * len(FAULT_KINDS) - 2
    assert {f.kind for f in plan(7, shortest, 5, 2, FAULT_KINDS, TARGETS)} == set(FAULT_KINDS)
    assert len(plan(7, shortest - 1, 5, 2, FAULT_KINDS, TARGETS)) == len(FAULT_KINDS) - 1
    assert "corrupt_shard" in FAULT_KINDS


def test_recovery_is_measured_to_the_first_completion_and_until_the_backlog_settled() -> None:
    sent_at = {"a": 1.0, "b": 2.0, "c": 11.0}
    answered_at = {"a": 3.0, "b": 14.5, "c": 11.2}
    got = recovery(sent_at, answered_at, completed_at=[3.0, 11.2, 14.5], healed=10.0)
    assert got == {"recovered_s": 1.2, "settled_s": 4.5}  # b, sent before the heal, ended last
    # A transfer sent before the heal and never answered: never settled.
    assert recovery(sent_at | {"d": 9.0}, answered_at, [11.2], healed=10.0)["settled_s"] is None
    # Nothing outstanding at the heal: settled at once; nothing completed after it: no recovery.
    assert recovery({"a": 1.0}, {"a": 3.0}, [3.0], healed=10.0) == {"recovered_s": None, "settled_s": 0.0}


def test_the_active_controller_is_the_leader_of_the_newest_epoch_any_node_recorded(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, tmp_path / "jars", brokers=3)
    assert kafka.active_controller() is None  # no node has written its quorum state yet
    for node, (epoch, leader) in zip(kafka.nodes, [(3, 2), (4, 1), (3, 2)], strict=True):
        path = node.root / "data" / "__cluster_metadata-0" / "quorum-state"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1}))
    assert kafka.active_controller() == 1  # node 2's view is stale: it missed epoch 4
    # An election under way: the newest epoch has no leader yet.
    path.write_text(json.dumps({"leaderId": -1, "leaderEpoch": 5, "votedId": 3}))
    assert kafka.active_controller() is None


def test_a_balanced_workload_keeps_hot_accounts_from_running_dry() -> None:
    pmap = PartitionMap.initial(4)
    flows = {}
    for balanced in (False, True):
        settings = WorkloadSettings(accounts=40, zipf_s=1.0, cross_fraction=0.5, balanced=balanced)
        w = Workload(settings, pmap)
        moves = [w.next() for _ in range(20_000)]
        out, into = Counter(m.debit for m in moves), Counter(m.credit for m in moves)
        hottest = w.accounts[0]
        flows[balanced] = into[hottest] / out[hottest]
    assert flows[False] < 0.3  # unbalanced: the hottest account mostly pays out
    assert 0.8 < flows[True] < 1.25
