"""Liquidity rules judged by the pure monitor core: each kind crosses and clears once, alerting
exactly twice through jitter, redeliveries and reordering; scopes; stable ids on replay; rule changes."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.domain.liquidity import BalanceObserved, LiquidityMonitor
from schemas.alerts import LiquidityAlert, decode_alert, encode_alert, liquidity_alert_id
from schemas.ledger_alert import decode_any_alert
from schemas.liquidity_rules import InvalidLiquidityMessage, LiquidityRule

FLOOR = LiquidityRule("floor", "available_below", "critical", "EUR", account_id="bank.eur", floor=1000)
OUTFLOW = LiquidityRule("outflow", "net_outflow_above", "warning", "EUR", account_prefix="bank.",
                        limit=5000, window_s=60)  # fmt: skip
SHARE = LiquidityRule("share", "pending_above_share", "warning", "EUR", share_bp=2000)  # 20% of posted


class Feed:
    """Observations of one account with growing journal seqs, one second apart."""

    def __init__(self, account_id: str = "bank.eur", currency: str = "EUR") -> None:
        self.account_id, self.currency, self.seq = account_id, currency, 0

    def __call__(self, posted: int, pending: int = 0, available: int | None = None) -> BalanceObserved:
        self.seq += 1
        return BalanceObserved(
            self.account_id, self.currency, posted, pending, 0,
            posted - pending if available is None else available, self.seq, 0, 1_000 * self.seq,
        )  # fmt: skip


def run(monitor: LiquidityMonitor, observations: Iterable[BalanceObserved]) -> list[LiquidityAlert]:
    return [alert for obs in observations for alert in monitor.observe(obs)]


def shuffled_with_redeliveries(observations: list[BalanceObserved], seed: int) -> list[BalanceObserved]:
    """Each observation delivered once or twice, some swapped with their neighbour, as Kafka
    redelivery after a rebalance and a producer retry may do."""
    rng = random.Random(seed)
    out: list[BalanceObserved] = []
    for obs in observations:
        out.append(obs)
        if rng.random() < 0.3:
            out.append(obs)
        if len(out) >= 2 and rng.random() < 0.2:
            out[-1], out[-2] = out[-2], out[-1]
    return out


# --- one cross and one clear per kind ------------------------------------------------------------------


def floor_story() -> list[BalanceObserved]:
    feed = Feed()
    above = [feed(5000 - 100 * i) for i in range(10)]  # 5000 down to 4100
    crossed = [feed(999 - (i % 7) * 50) for i in range(30)]  # jitter below the floor
    cleared = [feed(1000 + (i % 5) * 300) for i in range(20)]  # back, and jitter above it
    return above + crossed + cleared


def outflow_story() -> list[BalanceObserved]:
    feed = Feed("bank.usd-nostro")
    calm = [feed(100_000 + (i % 3) * 100) for i in range(70)]
    drain = [feed(100_000 - 1000 * i) for i in range(1, 11)]  # -10000 in 10 s: crossed at -6000
    holding = [feed(90_000 - (i % 4) * 10) for i in range(30)]  # jitter while the window still sees it
    after = [feed(90_000) for _ in range(60)]  # the drain slides out of the 60 s window
    return calm + drain + holding + after


def share_story() -> list[BalanceObserved]:
    feed = Feed("retail.alice")
    ok = [feed(10_000, pending=1000 + 100 * i) for i in range(10)]  # up to 19%
    held = [feed(10_000, pending=2001 + (i % 9) * 100) for i in range(25)]  # above 20%
    back = [feed(10_000, pending=2000 - (i % 3)) for i in range(10)]  # exactly 20% is not above
    return ok + held + back


STORIES = [
    (FLOOR, floor_story, 10 + 1, 40 + 1),
    (OUTFLOW, outflow_story, 70 + 5, None),  # posted 100200 at seq 15, 95000 at seq 75
    (SHARE, share_story, 10 + 1, 35 + 1),
]


@pytest.mark.parametrize(
    ("rule", "story", "fired_at", "cleared_at"), STORIES, ids=lambda v: getattr(v, "kind", "")
)
def test_each_kind_alerts_once_when_crossed_and_once_when_cleared(
    rule: LiquidityRule, story: object, fired_at: int, cleared_at: int | None
) -> None:
    observations = story()  # type: ignore[operator]
    alerts = run(LiquidityMonitor([rule]), observations)
    assert [a.state for a in alerts] == ["fired", "cleared"]
    fired, cleared = alerts
    assert fired.journal_seq == fired_at
    if cleared_at is not None:
        assert cleared.journal_seq == cleared_at
    assert fired.alert_id == liquidity_alert_id(rule.rule_id, fired.account_id, "EUR", fired_at, "fired")
    assert cleared.alert_id == liquidity_alert_id(rule.rule_id, fired.account_id, "EUR", fired_at, "cleared")
    assert (fired.rule_id, fired.kind, fired.severity) == (rule.rule_id, rule.kind, rule.severity)
    for alert in alerts:
        assert decode_alert(encode_alert(alert)) == alert


def test_what_the_alerts_report() -> None:
    floor_fired = run(LiquidityMonitor([FLOOR]), floor_story())[0]
    assert (floor_fired.observed, floor_fired.threshold) == (999, 1000)
    share_fired = run(LiquidityMonitor([SHARE]), share_story())[0]
    assert (share_fired.observed, share_fired.threshold) == (2001, 2000)
    outflow_fired = run(LiquidityMonitor([OUTFLOW]), outflow_story())[0]
    assert outflow_fired.threshold == 5000
    assert outflow_fired.observed > 5000


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(
    ("rule", "story", "fired_at", "cleared_at"), STORIES, ids=lambda v: getattr(v, "kind", "")
)
def test_redelivered_and_reordered_observations_change_nothing(
    rule: LiquidityRule, story: object, fired_at: int, cleared_at: int | None, seed: int
) -> None:
    observations = story()  # type: ignore[operator]
    in_order = run(LiquidityMonitor([rule]), observations)
    messy = run(LiquidityMonitor([rule]), shuffled_with_redeliveries(observations, seed))
    # A late observation is dropped, so a swap may move an alert by one seq; never add one.
    assert [a.state for a in messy] == ["fired", "cleared"]
    assert [a.journal_seq - b.journal_seq for a, b in zip(messy, in_order, strict=True)] in (
        [0, 0], [1, 0], [0, 1], [1, 1],
    )  # fmt: skip


def test_an_observation_not_newer_than_the_last_is_ignored() -> None:
    feed = Feed()
    monitor = LiquidityMonitor([FLOOR])
    first, low = feed(5000), feed(10)
    assert monitor.observe(low)[0].state == "fired"
    assert monitor.observe(first) == []  # older: would have cleared it
    assert monitor.observe(low) == []  # redelivered


def test_hysteresis_clears_only_past_the_margin() -> None:
    rule = LiquidityRule("floor", "available_below", "critical", "EUR", floor=1000, clear_margin=500)
    feed = Feed()
    alerts = run(LiquidityMonitor([rule]), [feed(x) for x in (2000, 900, 1100, 950, 1400, 1499, 1500, 1000)])
    assert [(a.state, a.journal_seq) for a in alerts] == [("fired", 2), ("cleared", 7)]


def test_the_outflow_window_keeps_bounded_points() -> None:
    rule = LiquidityRule("o", "net_outflow_above", "warning", "EUR", limit=10**9, window_s=3600)
    monitor = LiquidityMonitor([rule], max_points=16)
    feed = Feed()
    for i in range(5000):
        monitor.observe(feed(10**6 - i))
    points = monitor._subjects[("bank.eur", "EUR")].points
    assert len(points) <= 16 + 2


# --- scopes --------------------------------------------------------------------------------------------


def test_scopes_pick_their_subjects() -> None:
    by_account = LiquidityRule("acct", "available_below", "critical", "EUR", account_id="bank.eur", floor=100)
    by_prefix = LiquidityRule("pfx", "available_below", "warning", "EUR", account_prefix="bank.", floor=100)
    by_currency = LiquidityRule("ccy", "available_below", "warning", "EUR", floor=100)
    monitor = LiquidityMonitor([by_account, by_prefix, by_currency])
    low = [Feed(account, currency)(50) for account, currency in
           [("bank.eur", "EUR"), ("bank.gbp", "EUR"), ("alice", "EUR"), ("bank.eur", "USD")]]  # fmt: skip
    fired = {(a.rule_id, a.account_id, a.currency) for a in run(monitor, low)}
    assert fired == {
        ("acct", "bank.eur", "EUR"), ("pfx", "bank.eur", "EUR"), ("ccy", "bank.eur", "EUR"),
        ("pfx", "bank.gbp", "EUR"), ("ccy", "bank.gbp", "EUR"), ("ccy", "alice", "EUR"),
    }  # fmt: skip
    assert ("alice", "EUR") in monitor._subjects
    assert ("bank.eur", "USD") not in monitor._subjects  # watched by nothing: not kept


def test_subjects_are_bounded() -> None:
    monitor = LiquidityMonitor([SHARE], max_subjects=10)
    for i in range(100):
        monitor.observe(Feed(f"acct{i}")(1000))
    assert len(monitor._subjects) == 10
    assert monitor.evicted == 90


def test_too_many_rules_are_refused_before_anything_changes() -> None:
    monitor = LiquidityMonitor([FLOOR])
    many = [LiquidityRule(f"r{i}", "available_below", "warning", "EUR", floor=1) for i in range(1001)]
    with pytest.raises(InvalidLiquidityMessage, match="too_many_rules"):
        monitor.replace_rules(many, at_ms=0)
    with pytest.raises(InvalidLiquidityMessage, match="duplicate_rule_id"):
        monitor.replace_rules([FLOOR, FLOOR], at_ms=0)
    assert monitor.rules == (FLOOR,)


# --- replay --------------------------------------------------------------------------------------------


def mixed_story() -> list[BalanceObserved]:
    return floor_story() + outflow_story() + share_story()


def test_a_fresh_monitor_fed_the_same_observations_writes_the_same_alerts() -> None:
    observations = shuffled_with_redeliveries(mixed_story(), seed=7)
    first = run(LiquidityMonitor([FLOOR, OUTFLOW, SHARE]), observations)
    again = run(LiquidityMonitor([FLOOR, OUTFLOW, SHARE]), observations)
    assert len(first) >= 6
    assert [encode_alert(a) for a in first] == [encode_alert(a) for a in again]


def test_a_restarted_monitor_recalls_its_episodes_and_clears_under_the_same_id() -> None:
    observations = floor_story()
    uninterrupted = run(LiquidityMonitor([FLOOR]), observations)
    before = run(LiquidityMonitor([FLOOR]), observations[:20])  # fired at seq 11, still crossed
    assert [a.state for a in before] == ["fired"]
    restarted = LiquidityMonitor()
    for alert in before:
        restarted.recall(alert)
    assert restarted.replace_rules([FLOOR], at_ms=0) == []
    # The compacted topic gives it only the latest observation so far, then the rest.
    after = run(restarted, observations[19:])
    assert after == uninterrupted[1:]


def test_a_recalled_episode_of_a_rule_removed_meanwhile_is_cleared() -> None:
    fired = run(LiquidityMonitor([FLOOR]), floor_story()[:20])
    restarted = LiquidityMonitor()
    restarted.recall(fired[0])
    (cleared,) = restarted.replace_rules([SHARE], at_ms=5)
    assert (cleared.state, cleared.reason, cleared.journal_seq) == ("cleared", "rule_removed", 11)
    assert cleared.alert_id == liquidity_alert_id("floor", "bank.eur", "EUR", 11, "cleared")


def opened(available: int = 0, seq: int = 0, at_ms: int = 1_000) -> BalanceObserved:
    """bank.eur as a fresh shard opened it: no journal entry yet, so journal seq 0."""
    return BalanceObserved("bank.eur", "EUR", available, 0, 0, available, seq, 0, at_ms)


def test_an_account_opened_below_a_floor_fires_at_seq_0_and_the_alert_decodes_back() -> None:
    (fired,) = LiquidityMonitor([FLOOR]).observe(opened())
    assert (fired.state, fired.observed, fired.journal_seq) == ("fired", 0, 0)
    raw = encode_alert(fired)
    assert decode_alert(raw) == fired
    assert decode_any_alert(raw) == fired  # what a restarted monitor and the followers read


def test_an_episode_fired_and_cleared_at_seq_0_is_recalled_closed() -> None:
    first = LiquidityMonitor([FLOOR])
    written = first.observe(opened()) + first.replace_rules([], at_ms=2_000)
    assert [(a.state, a.journal_seq) for a in written] == [("fired", 0), ("cleared", 0)]
    restarted = LiquidityMonitor()
    for alert in written:
        restarted.recall(decode_alert(encode_alert(alert)))
    assert restarted.open_episodes() == {}
    assert restarted.replace_rules([], at_ms=3_000) == []  # no second clear of the same episode


# --- rule changes --------------------------------------------------------------------------------------


def test_a_rule_removed_while_crossed_clears_once() -> None:
    feed = Feed()
    monitor = LiquidityMonitor([FLOOR, SHARE])
    (fired,) = run(monitor, [feed(5000), feed(500)])
    assert fired.rule_id == "floor"
    (cleared,) = monitor.replace_rules([SHARE], at_ms=123)
    assert (cleared.state, cleared.reason, cleared.at_ms, cleared.journal_seq) == (
        "cleared",
        "rule_removed",
        123,
        2,
    )
    assert cleared.alert_id == liquidity_alert_id("floor", "bank.eur", "EUR", 2, "cleared")
    assert run(monitor, [feed(400), feed(300)]) == []
    assert monitor.replace_rules([SHARE], at_ms=124) == []


def test_a_rule_changed_keeps_or_clears_its_episodes() -> None:
    feed = Feed()
    monitor = LiquidityMonitor([FLOOR])
    run(monitor, [feed(500)])
    # New terms, same subject: the episode stays open and the next observation judges it.
    lower = LiquidityRule("floor", "available_below", "warning", "EUR", account_id="bank.eur", floor=100)
    assert monitor.replace_rules([lower], at_ms=1) == []
    (cleared,) = monitor.observe(feed(500))
    assert (cleared.state, cleared.reason, cleared.severity) == ("cleared", None, "warning")
    # Another scope that leaves the subject out: cleared at once.
    run(monitor, [feed(50)])
    elsewhere = LiquidityRule("floor", "available_below", "warning", "EUR", account_id="other", floor=100)
    (changed,) = monitor.replace_rules([elsewhere], at_ms=2)
    assert (changed.state, changed.reason) == ("cleared", "rule_changed")


def test_a_rule_added_judges_from_the_next_observation() -> None:
    feed = Feed()
    monitor = LiquidityMonitor([SHARE])
    run(monitor, [feed(500)])  # below FLOOR's floor, but FLOOR is not in force yet
    assert monitor.replace_rules([SHARE, FLOOR], at_ms=1) == []
    (fired,) = monitor.observe(feed(400))
    assert (fired.rule_id, fired.journal_seq) == ("floor", 2)


# --- a property: alerts alternate, one episode at a time ---------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-2000, max_value=4000), min_size=1, max_size=80), st.integers(0, 400))
def test_alerts_alternate_fired_and_cleared(balances: list[int], margin: int) -> None:
    rule = LiquidityRule("floor", "available_below", "critical", "EUR", floor=1000, clear_margin=margin)
    feed = Feed()
    observations = [feed(b) for b in balances]
    alerts = run(LiquidityMonitor([rule]), observations)
    assert [a.state for a in alerts] == ["fired", "cleared"] * (len(alerts) // 2) + ["fired"] * (
        len(alerts) % 2
    )
    for fired, cleared in zip(alerts[::2], alerts[1::2], strict=False):
        assert fired.alert_id.replace("-", "") != cleared.alert_id.replace("-", "")
        assert fired.alert_id == liquidity_alert_id("floor", "bank.eur", "EUR", fired.journal_seq, "fired")
        assert cleared.alert_id == liquidity_alert_id(
            "floor", "bank.eur", "EUR", fired.journal_seq, "cleared"
        )
    # An open episode means the last balance is not yet back past the margin; none, not crossed.
    if alerts and alerts[-1].state == "fired":
        assert balances[-1] < 1000 + margin
    else:
        assert balances[-1] >= 1000
