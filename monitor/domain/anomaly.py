"""Anomaly detection per shard: is a shard healthy, jittery, caught in a fleet-wide event, sick,
silent or diverged? Pure: samples and time come in, verdicts go out; nothing here does I/O.

Every process publishes a TelemetrySample per shard and metric once a second (metrics, not money:
floats). Each series (process, shard, metric) keeps a robust online baseline: an EWMA of its level
and an EWMA of the absolute deviation from it (an online MAD), the spread floored so that a flat
series does not alarm on noise. A sample scoring (value - level) / spread above the threshold is
anomalous; only rises count, since every metric watched here is bad when high. While a series is
anomalous its baseline does not learn, or a sustained problem would become its new normal.

An anomaly episode starts at the first anomalous sample and ends once the series has been normal
for `clear_ms`. A consumer lag that keeps growing is an episode too; one that falls is a backlog
draining: never anomalous, however high (the baseline does not learn from it either). At
`assess(now)`, per shard, the first that applies:

    diverged    a divergence (reconciliation or hash-chain mismatch) was signalled since the last
                assessment; reported once per signal: the breaker latches, so it need not repeat
    fleet_wide  every anomaly of this shard (or its silence) is shared, at once, by at least
                `fleet_share` of the shards (and `fleet_min_shards`): a broker restart or the
                monitor's own feed failing, not this shard's problem
    stale       no sample for this shard for `stale_ms`: a dead or stopped process is a problem too
                (the breaker treats it as sick: transfers to a shard nobody serves would only hang)
    sick        an episode sustained `sustain_ms` or more
    jitter      an episode shorter than that
    healthy     none of the above

A shard's episode that overlapped a fleet-wide event counts its sustain window from the moment the
event ended for it, so the tail of a broker restart (shards recovering a few seconds apart) is not
taken for one shard's problem. `assess` is meant to be called every tick (once a second): it keeps
that bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from schemas.telemetry import LOOP_LAG_MS, REPLY_P99_MS

HEALTHY: Final = "healthy"
JITTER: Final = "jitter"
FLEET_WIDE: Final = "fleet_wide"
SICK: Final = "sick"
STALE: Final = "stale"
DIVERGED: Final = "diverged"
VERDICTS: Final = frozenset({HEALTHY, JITTER, FLEET_WIDE, SICK, STALE, DIVERGED})

STEP_P99_MS: Final = "step_p99_ms"
REJECTIONS_PER_S: Final = "rejections_per_s"
CONSUMER_LAG: Final = "consumer_lag"
ERRORS_PER_S: Final = "errors_per_s"
REJECTION_PCT: Final = "rejection_pct"


@dataclass(frozen=True)
class TelemetrySample:
    process: str
    """Who measured it, e.g. "shard-worker-3" or "coordinator-1"."""
    shard: int | None
    """The shard it is about; None for a process-wide metric (kept, but judged by no shard)."""
    metric: str
    value: float
    at_ms: int


@dataclass(frozen=True)
class AnomalyPolicy:
    """How the detector judges samples. The defaults suit samples once a second (see
    tests/unit/test_anomaly_replay.py for what they detect on a synthetic recorded series)."""

    alpha: float = 0.05
    """EWMA weight of a normal sample, for the level and the spread: a memory of about 20 samples."""
    anomalous_alpha: float = 0.0
    """Weight of a sample during an anomaly episode: 0 freezes the baseline from the first anomalous
    sample until the episode ends, so a sustained problem never becomes the normal."""
    threshold: float = 6.0
    """A sample scoring above this is anomalous: six spreads above the level."""
    min_spread: float = 1.0
    """Floor of the spread, in the metric's unit: a series flat at 0 (no rejections) is not alarmed
    by its first 2 rejections a second (score 2/1 = 2)."""
    min_spread_of: Mapping[str, float] = field(default_factory=lambda: {LOOP_LAG_MS: 50.0})
    """A metric's own floor of the spread, instead of `min_spread`: a loop lag alarms from 300 ms
    above its level on. Under ledger chaos (seed 3) a process starting beside a shard (Python's
    start-up on 2 cores) lagged its loop by tens of ms every second or two, against a level of 7
    ms: a healthy shard's breaker opened. A stopped one wakes up to 600 ms late every second."""
    min_spread_fraction: float = 0.1
    """Floor of the spread as a share of the level: a p99 of 10 ms alarms from 16 ms on, whatever
    how flat it was (a rise of 60 %), never on ordinary noise."""
    judged: frozenset[str] = frozenset({STEP_P99_MS, REPLY_P99_MS, LOOP_LAG_MS, ERRORS_PER_S, CONSUMER_LAG})
    """The metrics that can make a shard sick, each bad when high. A shard worker stopped and
    resumed in short cycles keeps its own batches quick (ledger chaos, seed 3: no breaker opened on
    slow_shard); it shows in its loop lag, and in its reply time as the coordinators see it.
    Under ledger chaos (seed 3) the others opened the breakers of healthy shards: throughput and
    rejections per second rise when a shard catches up after a pause (its recovery), and the share
    of commands refused moves with the business (accounts frozen on one shard), not with the
    shard's health.
    They are kept (a policy may judge them), not judged by default."""
    warmup_samples: int = 10
    """A series learns from its first samples without judging them."""
    clear_ms: int = 3_000
    """An episode ends after its series has been normal this long (one good second in a bad
    stretch does not end it)."""
    sustain_ms: int = 5_000
    """An episode this long or longer is sick; shorter, it is jitter."""
    stale_ms: int = 6_000
    """A shard with no sample for this long is stale (a process restart takes 1-3 s)."""
    fleet_share: float = 0.5
    """The same metric anomalous on at least this share of the shards at once is fleet-wide..."""
    fleet_min_shards: int = 2
    """...if that is at least this many shards: with 2 shards one sick shard is not the fleet, and a
    one-shard ledger's anomaly is that shard's."""
    lag_min_growth: float = 100.0
    """A consumer lag counts as growing once it has grown by this many records, every sample higher
    than the one before (a consumer keeping up with a steady load holds its lag, or lets it fall)."""


@dataclass(frozen=True)
class Baseline:
    """One series' baseline and episode."""

    level: float = 0.0
    spread: float = 0.0
    samples: int = 0
    last_ms: int = -1
    last_value: float = 0.0
    onset_ms: int | None = None
    """Start of the current episode (anomalous sample or growing lag); None outside one."""
    last_anomalous_ms: int = -1
    lag_low_ms: int | None = None
    """Consumer lag only: the last sample that did not grow (or the first): growth is counted since."""
    lag_low_value: float = 0.0


@dataclass(frozen=True)
class Verdict:
    shard: int
    status: str  # one of VERDICTS
    metrics: tuple[str, ...] = ()
    """The anomalous metrics (sorted), or the sick ones when sick."""
    detail: str = ""
    """For people: what was seen, e.g. 'step_p99_ms 84 (level 10, score 74) for 6 s'."""


def score(baseline: Baseline, value: float, policy: AnomalyPolicy, metric: str = "") -> float:
    return (value - baseline.level) / spread_of(baseline, policy, metric)


def spread_of(baseline: Baseline, policy: AnomalyPolicy, metric: str = "") -> float:
    floor = policy.min_spread_of.get(metric, policy.min_spread)
    return max(baseline.spread, floor, policy.min_spread_fraction * abs(baseline.level))


def observe(baseline: Baseline, sample: TelemetrySample, policy: AnomalyPolicy) -> Baseline:
    """The series' baseline after `sample` (one not newer than the last is ignored: redelivered)."""
    if sample.at_ms <= baseline.last_ms or not math.isfinite(sample.value):
        return baseline
    value, now = sample.value, sample.at_ms
    judged = baseline.samples >= policy.warmup_samples
    watched = judged and sample.metric in policy.judged
    high = watched and score(baseline, value, policy, sample.metric) > policy.threshold
    # A lag falling back is a backlog draining: recovery, not the problem (it is not learnt either).
    draining = sample.metric == CONSUMER_LAG and value < baseline.last_value
    anomalous = high and not draining
    onset, last_anomalous = baseline.onset_ms, baseline.last_anomalous_ms
    if anomalous:
        onset, last_anomalous = (now if onset is None else onset), now
    elif onset is not None and now - last_anomalous >= policy.clear_ms:
        onset = None
    updated = replace(
        baseline, samples=baseline.samples + 1, last_ms=now, last_value=value, onset_ms=onset,
        last_anomalous_ms=last_anomalous,
    )  # fmt: skip
    if sample.metric == CONSUMER_LAG:
        updated = _track_lag(baseline, updated, sample, policy)
    return _learn(baseline, updated, value, high, policy)


def _learn(before: Baseline, after: Baseline, value: float, high: bool, policy: AnomalyPolicy) -> Baseline:
    """Level and spread moved towards `value`, unless it scored high: frozen for the whole episode,
    not only on its anomalous samples, or a problem that comes and goes (scores of 3, 9, 4, 12...)
    would teach the baseline its quieter seconds, each step up hiding more of the next ones."""
    if before.samples == 0:
        return replace(after, level=value, spread=0.0)
    weight = policy.anomalous_alpha if high or after.onset_ms is not None else policy.alpha
    level = before.level + weight * (value - before.level)
    spread = before.spread + weight * (abs(value - before.level) - before.spread)
    return replace(after, level=level, spread=spread)


def _track_lag(before: Baseline, after: Baseline, sample: TelemetrySample, policy: AnomalyPolicy) -> Baseline:
    """A lag growing without a fall since `lag_low_ms` is an episode once it grew `lag_min_growth`.
    Its onset is then, not when the growth began: dated back, it would be sustained the moment it
    is seen, before the other shards' lags of a fleet-wide event had grown as far. The level/spread
    episode still applies (a jump is anomalous at once)."""
    if before.samples == 0 or sample.value <= before.last_value:
        return replace(after, lag_low_ms=sample.at_ms, lag_low_value=sample.value)
    if before.lag_low_ms is not None and sample.value - before.lag_low_value >= policy.lag_min_growth:
        onset = sample.at_ms if after.onset_ms is None else after.onset_ms
        return replace(after, onset_ms=onset, last_anomalous_ms=sample.at_ms)
    return after


@dataclass
class _Shard:
    last_seen_ms: int
    divergences: list[tuple[int, str]] = field(default_factory=list)
    sustain_from: dict[str, int] = field(default_factory=dict)
    """Per anomalous metric (and "stale"): when its sustain window started, if a fleet-wide event
    pushed it past the episode's onset."""


class AnomalyDetector:
    """Baselines of every series and the verdict of every shard. Mutable, but deterministic: the
    same samples and calls give the same verdicts; time only ever comes in as arguments."""

    def __init__(self, shards: Iterable[int], started_ms: int, policy: AnomalyPolicy | None = None) -> None:
        self.policy = policy or AnomalyPolicy()
        # A shard never heard of is stale `stale_ms` after the monitor started.
        self._shards = {shard: _Shard(started_ms) for shard in sorted(set(shards))}
        self._series: dict[tuple[str, int | None, str], Baseline] = {}

    def observe(self, sample: TelemetrySample) -> None:
        key = (sample.process, sample.shard, sample.metric)
        self._series[key] = observe(self._series.get(key, Baseline()), sample, self.policy)
        shard = self._shards.get(sample.shard) if sample.shard is not None else None
        if shard is not None:
            shard.last_seen_ms = max(shard.last_seen_ms, sample.at_ms)

    def divergence(self, shard: int, detail: str, at_ms: int) -> None:
        """A reconciliation or hash-chain mismatch on `shard`: reported by the next `assess` at or
        after `at_ms`, once."""
        if shard not in self._shards:
            raise ValueError(f"shard {shard} is not one of the {len(self._shards)} shards watched")
        self._shards[shard].divergences.append((at_ms, detail))

    def baseline(self, process: str, shard: int | None, metric: str) -> Baseline | None:
        return self._series.get((process, shard, metric))

    def assess(self, now_ms: int) -> dict[int, Verdict]:
        """Every shard's verdict at `now_ms` (see the module's docstring for the rules)."""
        anomalies = {shard: self._anomalies(shard, now_ms) for shard in self._shards}
        affected: dict[str, int] = {}
        for found in anomalies.values():
            for metric in found:
                affected[metric] = affected.get(metric, 0) + 1
        needed = max(self.policy.fleet_min_shards, math.ceil(self.policy.fleet_share * len(self._shards)))
        fleet = {metric for metric, count in affected.items() if count >= needed}
        return {shard: self._verdict(shard, anomalies[shard], fleet, now_ms) for shard in self._shards}

    def _anomalies(self, shard: int, now_ms: int) -> dict[str, int]:
        """Anomalous metric -> onset of its episode ("stale" -> when the shard went silent)."""
        found: dict[str, int] = {}
        for (_, series_shard, metric), baseline in self._series.items():
            if series_shard == shard and baseline.onset_ms is not None and baseline.onset_ms <= now_ms:
                if now_ms - baseline.last_anomalous_ms >= self.policy.clear_ms:
                    # Over, though no normal sample came to say so: a series may go quiet while
                    # its shard's breaker is open (no traffic, no share of it). Seen under ledger
                    # chaos (seed 3): an episode that could only end on a sample never ended.
                    continue
                found[metric] = min(found.get(metric, baseline.onset_ms), baseline.onset_ms)
        last_seen = self._shards[shard].last_seen_ms
        if now_ms - last_seen >= self.policy.stale_ms:
            found[STALE] = last_seen
        return found

    def take_divergences(self, now_ms: int) -> dict[int, Verdict]:
        """The diverged verdicts due at `now_ms`, now rather than at the next `assess` (which then
        does not repeat them), judging nothing else: a divergence needs no telemetry, and a
        shard's other verdicts are the tick's to give."""
        found = {}
        for shard in self._shards:
            diverged = self._take_divergence(shard, now_ms)
            if diverged is not None:
                found[shard] = diverged
        return found

    def _take_divergence(self, shard: int, now_ms: int) -> Verdict | None:
        state = self._shards[shard]
        due = [(at, detail) for at, detail in state.divergences if at <= now_ms]
        if not due:
            return None
        state.divergences = [d for d in state.divergences if d[0] > now_ms]
        return Verdict(shard, DIVERGED, (), "; ".join(detail for _, detail in due)[:500])

    def _verdict(self, shard: int, anomalies: dict[str, int], fleet: set[str], now_ms: int) -> Verdict:
        state = self._shards[shard]
        diverged = self._take_divergence(shard, now_ms)
        if diverged is not None:
            return diverged
        for metric in list(state.sustain_from):
            if metric not in anomalies:
                del state.sustain_from[metric]  # the episode ended: a new one starts afresh
        if not anomalies:
            return Verdict(shard, HEALTHY)
        names = tuple(sorted(anomalies))
        for metric in anomalies.keys() & fleet:
            state.sustain_from[metric] = now_ms  # shared by the fleet: not yet this shard's own
        if set(anomalies) <= fleet:
            return Verdict(shard, FLEET_WIDE, names, f"also on most shards: {', '.join(names)}")
        if STALE in anomalies and STALE not in fleet:
            return Verdict(shard, STALE, (STALE,), f"no sample for {(now_ms - anomalies[STALE]) // 1000} s")
        lasting = {
            metric: now_ms - max(onset, state.sustain_from.get(metric, onset))
            for metric, onset in anomalies.items()
            if metric not in fleet
        }
        sick = tuple(sorted(m for m, lasted in lasting.items() if lasted >= self.policy.sustain_ms))
        if sick:
            return Verdict(shard, SICK, sick, self._describe(shard, sick, lasting))
        return Verdict(shard, JITTER, names, self._describe(shard, names, lasting))

    def _describe(self, shard: int, metrics: tuple[str, ...], lasting: dict[str, int]) -> str:
        parts = []
        for (process, series_shard, metric), b in sorted(self._series.items(), key=lambda kv: str(kv[0])):
            if series_shard == shard and metric in metrics and b.onset_ms is not None:
                parts.append(
                    f"{metric} {b.last_value:.6g} (level {b.level:.6g}) from {process}"
                    f" for {lasting.get(metric, 0) // 1000} s"
                )
        return "; ".join(parts)[:500]
