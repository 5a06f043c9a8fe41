"""Liquidity rules judged against a stream of balance observations: pure, time passed in as ms.

`LiquidityMonitor.observe(observation)` returns the alerts that observation decides, usually none.

Episodes. For each rule and subject (one account in one currency) the monitor keeps whether the
rule is crossed. An alert fires once when it becomes crossed (an episode begins, at that
observation's journal seq) and once when it clears; while it holds, observations say nothing
(Blnk's balance monitors alert on every transfer: the complaint this answers). With a rule's
`clear_margin`, an episode clears only once the subject is that far back on the safe side, so a
balance hovering at the floor does not flap.

At least once, in any order. Kafka may redeliver or reorder observations: one whose journal seq is
not newer than the last seen for its subject is ignored. Alert ids are derived from the rule, the
subject, the seq at which the episode began and fired/cleared (schemas.alerts.liquidity_alert_id),
so a fresh monitor fed the same observations (and rule changes) writes the same alerts, ids and all.

A restarted monitor that rebuilds from the compacted ledger.balances topic sees only the latest
observation of each account, not the one an episode began at. So first `recall` the alerts it
wrote (ledger.alerts): each open episode is restored with its start seq, and a clear that follows
carries the id it would have had without the restart. Then `replace_rules` with the rules in force,
which clears recalled episodes of rules removed meanwhile, then observe.

Rule changes (`replace_rules`, the SetLiquidityRules command): a rule removed while crossed for a
subject clears it at once (reason rule_removed); a rule whose kind changed, or whose currency or
scope no longer takes in the subject, clears it too (reason rule_changed); a rule whose thresholds
changed keeps its episodes, judged by the new terms at the subject's next observation. Rules added
judge each subject from its next observation. Order of alerts: subjects least recently observed
first, then the episodes in the order they began.

Net outflow. Per subject the monitor keeps (at_ms, posted) points over the longest window of the
net_outflow_above rules that watch it; the outflow over a window W is posted at the window's start
(the last point at or before now - W, else the oldest point kept) minus posted now. Points are
kept at a resolution of that longest window / `max_points`: a point replaces the previous one when
both fall in the same slot, so at most max_points + 2 points are kept per subject. Time moves only
with a subject's observations: an at_ms earlier than the subject's last counts as the last (clocks
of one shard can step back), and an outflow episode on an account that falls silent clears at its
next observation, not by itself.

Bounds: at most MAX_RULES rules; at most `max_subjects` subjects (only subjects some rule watches are
kept); past that, the least recently observed subject is forgotten, open episodes and all (a later
crossing starts a new episode, a new id); `evicted` counts them so the wiring can export it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from schemas.alerts import INT64, LiquidityAlert, liquidity_alert_id
from schemas.liquidity_rules import MAX_RULES, InvalidLiquidityMessage, LiquidityRule

DEFAULT_MAX_SUBJECTS: Final = 100_000
DEFAULT_MAX_POINTS: Final = 256


@dataclass(frozen=True, slots=True)
class BalanceObserved:
    """A shard's balance of one account after one of its batches (a BalanceChanged message on
    ledger.balances, mapped by the wiring). Amounts in minor units of `currency`."""

    account_id: str
    currency: str
    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    journal_seq: int
    shard: int
    at_ms: int


@dataclass(slots=True)
class _Episode:
    """A rule crossed for a subject, since the observation at `start_seq`."""

    start_seq: int
    kind: str
    severity: str
    observed: int
    threshold: int


UNSEEN: Final = -1
"""The last seq of a subject known only from recalled alerts: below every journal seq, since a
shard publishes the accounts it opens before its first journal entry at seq 0."""


@dataclass(slots=True)
class _Subject:
    last_seq: int = UNSEEN
    last_at_ms: int = 0
    last: BalanceObserved | None = None
    points: deque[tuple[int, int]] = field(default_factory=deque)
    episodes: dict[str, _Episode] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Measure:
    observed: int
    threshold: int
    crossed: bool
    safe: bool
    """Back far enough on the safe side to clear an open episode (never while crossed)."""


def _saturated(value: int) -> int:
    """Alerts carry int64 (a difference of two BIGINT balances may not fit one)."""
    return max(INT64[0], min(INT64[1], value))


def _measure(rule: LiquidityRule, obs: BalanceObserved, outflow: int) -> _Measure:
    margin = rule.clear_margin
    if rule.kind == "available_below":
        assert rule.floor is not None
        crossed = obs.available < rule.floor
        return _Measure(
            obs.available, rule.floor, crossed, not crossed and obs.available >= rule.floor + margin
        )
    if rule.kind == "net_outflow_above":
        assert rule.limit is not None
        crossed = outflow > rule.limit
        return _Measure(outflow, rule.limit, crossed, not crossed and outflow <= rule.limit - margin)
    assert rule.share_bp is not None
    # pending > share_bp/10000 of posted, in integers; for an integer pending this is exactly
    # pending > floor(share_bp * posted / 10000), the threshold the alert reports.
    crossed = obs.pending_debits * 10000 > rule.share_bp * obs.posted
    safe = not crossed and obs.pending_debits * 10000 <= (rule.share_bp - margin) * obs.posted
    return _Measure(obs.pending_debits, rule.share_bp * obs.posted // 10000, crossed, safe)


class LiquidityMonitor:
    """The rules in force and, per subject they watch, the last seq, outflow points and episodes."""

    def __init__(
        self,
        rules: Iterable[LiquidityRule] = (),
        *,
        max_subjects: int = DEFAULT_MAX_SUBJECTS,
        max_points: int = DEFAULT_MAX_POINTS,
    ) -> None:
        self._max_subjects = max_subjects
        self._max_points = max_points
        self._subjects: OrderedDict[tuple[str, str], _Subject] = OrderedDict()
        self._rules: dict[str, LiquidityRule] = {}
        self._by_currency: dict[str, list[LiquidityRule]] = {}
        self.evicted = 0
        """Subjects forgotten to stay within max_subjects."""
        self._install(tuple(rules))

    @property
    def rules(self) -> tuple[LiquidityRule, ...]:
        return tuple(self._rules.values())

    def open_episodes(self) -> dict[tuple[str, str, str], int]:
        """(rule_id, account_id, currency) -> the seq its episode began at: for status and tests."""
        return {
            (rule_id, *key): episode.start_seq
            for key, subject in self._subjects.items()
            for rule_id, episode in subject.episodes.items()
        }

    # --- inputs ------------------------------------------------------------------------------------

    def observe(self, obs: BalanceObserved) -> list[LiquidityAlert]:
        key = (obs.account_id, obs.currency)
        rules = [r for r in self._by_currency.get(obs.currency, ()) if r.matches(*key)]
        subject = self._subjects.get(key)
        if subject is None:
            if not rules:
                return []  # watched by nothing: not kept
            subject = self._track(key)
        elif obs.journal_seq <= subject.last_seq:
            return []  # redelivered, or overtaken by a newer observation
        self._subjects.move_to_end(key)
        subject.last_seq, subject.last = obs.journal_seq, obs
        subject.last_at_ms = max(subject.last_at_ms, obs.at_ms)
        windows = [r.window_s for r in rules if r.window_s is not None]
        if windows:
            self._add_point(subject, max(windows) * 1000, obs.posted)
        else:
            subject.points.clear()  # a window added later starts from its next observation
        alerts: list[LiquidityAlert] = []
        for rule in rules:
            outflow = self._outflow(subject, rule.window_s * 1000) if rule.window_s is not None else 0
            alert = self._judge(rule, key, subject, _measure(rule, obs, outflow))
            if alert is not None:
                alerts.append(alert)
        return alerts

    def replace_rules(self, rules: Iterable[LiquidityRule], at_ms: int) -> list[LiquidityAlert]:
        """Install a new rule set (whole: it is checked before anything changes); the clears it
        implies for open episodes, stamped `at_ms` (the command's time)."""
        new = tuple(rules)
        self._check(new)
        by_id = {rule.rule_id: rule for rule in new}
        alerts: list[LiquidityAlert] = []
        for key, subject in self._subjects.items():
            for rule_id, episode in list(subject.episodes.items()):
                rule = by_id.get(rule_id)
                if rule is None:
                    reason = "rule_removed"
                elif rule.kind != episode.kind or not rule.matches(*key):
                    reason = "rule_changed"
                else:
                    continue
                del subject.episodes[rule_id]
                seq = episode.start_seq if subject.last_seq == UNSEEN else subject.last_seq
                alerts.append(self._alert(rule_id, key, episode, "cleared", seq, at_ms, reason))
        self._install(new)
        return alerts

    def recall(self, alert: LiquidityAlert) -> None:
        """Rebuild episodes from the alerts this monitor (or a predecessor) wrote, in their order
        on ledger.alerts; then replace_rules, then observe. Emits nothing. Also while running, for
        the alerts other monitors write (several share the balances): one about an observation this
        monitor has judged itself, or an earlier one, tells it nothing it does not know better."""
        key = (alert.account_id, alert.currency)
        subject = self._subjects.get(key)
        if subject is not None and alert.journal_seq <= subject.last_seq:
            return
        if alert.state == "cleared":
            if subject is not None:
                subject.episodes.pop(alert.rule_id, None)
            return
        if subject is None:
            subject = self._track(key)
        subject.episodes[alert.rule_id] = _Episode(
            alert.journal_seq, alert.kind, alert.severity, alert.observed, alert.threshold
        )

    # --- the parts ---------------------------------------------------------------------------------

    def _judge(
        self, rule: LiquidityRule, key: tuple[str, str], subject: _Subject, measure: _Measure
    ) -> LiquidityAlert | None:
        episode = subject.episodes.get(rule.rule_id)
        assert subject.last is not None
        seq, at_ms = subject.last.journal_seq, subject.last.at_ms
        if episode is None:
            if not measure.crossed:
                return None
            episode = _Episode(seq, rule.kind, rule.severity, measure.observed, measure.threshold)
            subject.episodes[rule.rule_id] = episode
            return self._alert(rule.rule_id, key, episode, "fired", seq, at_ms)
        episode.severity, episode.observed, episode.threshold = (
            rule.severity,
            measure.observed,
            measure.threshold,
        )
        if not measure.safe:
            return None
        del subject.episodes[rule.rule_id]
        return self._alert(rule.rule_id, key, episode, "cleared", seq, at_ms)

    @staticmethod
    def _alert(
        rule_id: str,
        key: tuple[str, str],
        episode: _Episode,
        state: str,
        seq: int,
        at_ms: int,
        reason: str | None = None,
    ) -> LiquidityAlert:
        return LiquidityAlert(
            alert_id=liquidity_alert_id(rule_id, *key, episode.start_seq, state),
            rule_id=rule_id, state=state, severity=episode.severity, account_id=key[0],
            currency=key[1], kind=episode.kind, observed=_saturated(episode.observed),
            threshold=_saturated(episode.threshold), journal_seq=seq, at_ms=at_ms, reason=reason,
        )  # fmt: skip

    def _add_point(self, subject: _Subject, window_ms: int, posted: int) -> None:
        now = subject.last_at_ms
        slot = max(1, window_ms // self._max_points)
        points = subject.points
        if points and points[-1][0] // slot == now // slot:
            points.pop()
        points.append((now, posted))
        # Drop points before the window's start, but keep the last of them: posted at the start.
        while len(points) >= 2 and points[1][0] <= now - window_ms:
            points.popleft()
        while len(points) > self._max_points + 2:  # cannot happen with the slots; a plain bound
            points.popleft()

    @staticmethod
    def _outflow(subject: _Subject, window_ms: int) -> int:
        start = subject.last_at_ms - window_ms
        baseline = subject.points[0][1]
        for at, posted in subject.points:
            if at > start:
                break
            baseline = posted
        return baseline - subject.points[-1][1]

    def _track(self, key: tuple[str, str]) -> _Subject:
        while len(self._subjects) >= self._max_subjects:
            self._subjects.popitem(last=False)
            self.evicted += 1
        subject = self._subjects[key] = _Subject()
        return subject

    @staticmethod
    def _check(rules: tuple[LiquidityRule, ...]) -> None:
        if len(rules) > MAX_RULES:
            raise InvalidLiquidityMessage("too_many_rules", f"{len(rules)} rules, at most {MAX_RULES}")
        if len({rule.rule_id for rule in rules}) != len(rules):
            raise InvalidLiquidityMessage("duplicate_rule_id", "two rules share an id")

    def _install(self, rules: tuple[LiquidityRule, ...]) -> None:
        self._check(rules)
        self._rules = {rule.rule_id: rule for rule in rules}
        self._by_currency = {}
        for rule in rules:
            self._by_currency.setdefault(rule.currency, []).append(rule)
