"""`ledger chaos`: a 3-broker, 4-shard, 2-coordinator local stack, the workload, the nemesis, the
checker; a table and a JSON report; exit 1 on any violation."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from deploy.chaos.run import AUDIT_EVERY_S, RELAY_PROCESSES, ChaosSettings, run_chaos
from deploy.chaos.schedule import FAULT_KINDS
from deploy.stack import LocalStack, StackSettings


@click.command()
@click.option("--duration", type=click.FloatRange(10), default=120.0, show_default=True,
              envvar="LEDGER_CHAOS_DURATION", help="Seconds of workload under the nemesis.")  # fmt: skip
@click.option(
    "--fault-s", type=click.FloatRange(1), default=8.0, show_default=True, help="Each fault's window."
)
@click.option(
    "--calm-s", type=click.FloatRange(1), default=6.0, show_default=True, help="Calm between faults."
)
@click.option(
    "--rate", type=click.FloatRange(1), default=30.0, show_default=True, help="Transfers per second."
)
@click.option("--settle", type=click.FloatRange(10), default=180.0, show_default=True,
              help="After healing: seconds to answer and settle everything.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True, envvar="LEDGER_CHAOS_SEED")
@click.option(
    "--kinds", default=",".join(FAULT_KINDS), show_default=True, help="Fault kinds, comma-separated."
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the report."
)
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="LEDGER_DATA_DIR", help="Keep engine data and process logs here.")  # fmt: skip
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), default=Path(".ledger"),
              envvar="LEDGER_HOME", show_default=True)  # fmt: skip
def chaos(
    duration: float, fault_s: float, calm_s: float, rate: float, settle: float, seed: int, kinds: str,
    json_path: Path | None, data_dir: Path | None, home: Path,
) -> None:  # fmt: skip
    """Money is never created, lost or moved twice, whatever fails: show it under injected faults."""
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if unknown := set(chosen) - set(FAULT_KINDS):
        raise click.BadParameter(
            f"unknown {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}", param_hint="--kinds"
        )
    settings = ChaosSettings(duration, fault_s, calm_s, rate, settle, seed, chosen)
    stack_settings = StackSettings.from_env(os.environ, home=home, brokers=3, shards=4, data_dir=data_dir)
    with LocalStack(stack_settings) as stack:
        # Half the shards with a relay process to kill, half sending from the worker's memory.
        # With the monitor, whose breakers the report times, auditing often enough to catch a
        # corrupted shard within its fault window.
        monitor = ("--tick", "0.5", "--audit-every", f"{AUDIT_EVERY_S:g}")
        stack.start_ledger(coordinators=2, separate_relays=RELAY_PROCESSES, monitor=monitor)
        _log_to(stack.logs_dir / "chaos.log")
        report = asyncio.run(run_chaos(stack, settings))
    click.echo(table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        sys.exit(1)


def _log_to(path: Path) -> None:
    """The run's log goes beside its processes' logs, timed like theirs; the terminal shows only
    the nemesis, not the clients' retries while a broker is down (hundreds of lines, expected)."""
    logging.basicConfig(
        level=logging.INFO, handlers=[logging.FileHandler(path)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    terminal = logging.StreamHandler()
    terminal.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("deploy.chaos.nemesis").addHandler(terminal)


def table(report: dict[str, Any]) -> str:
    t = report["transfers"]
    lines = [
        f"chaos run: seed {report['seed']}, {report['duration_s']:.0f}s of workload under faults",
        f"  transfers: {t['sent']} sent, by result {t['by_state']}; {t['duplicates_sent']} duplicates and"
        f" {t['reused_ids_sent']} reused ids sent ({t['duplicates_absorbed']} ids absorbed);"
        f" {t['balance_reads']} balance reads;"
        f" {t['account_freezes']} account freezes;"
        f" all answered within the bound: {t['all_answered_within_bound']}",
        f"  rejected and compensated, by reason: {t['by_reason']}",
        *_pending_lines(t.get("pending")),
        *_linked_lines(t.get("linked")),
        f"  every saga terminal {report['settled_after_heal_s']} s after the final heal",
        *(f"  still in a transaction: {session}" for session in report.get("stuck_sessions", [])),
        *(f"  skipped {kind}: {reason}" for kind, reason in report["skipped_kinds"].items()),
        "  faults (recovery: from the heal to the first new completion; settled: until every transfer"
        " sent before the heal had its result):",
    ]
    for f in report["faults"]:
        note = f"  ERROR {f['error']}" if f["error"] else f"  {f['detail']}" if f["detail"] else ""
        lines.append(
            f"    {f['started_s']:6.1f}s {f['kind']:<27} target {f['target']}  healed {f['healed_s']:6.1f}s,"
            f" recovery {f['recovered_s']} s, settled {f['settled_s']} s{note}"
        )
    lines.extend(_breaker_lines(report.get("breakers")))
    for window, lat in sorted(report["latency_ms"].items()):
        lines.append(
            f"  latency {window:>28}: p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
            f" (n={lat['n']})"
        )
    lines.append("  invariants:")
    for name, v in report["violations"].items():
        lines.append(f"    {name:<3} {v['count']:>4} violations  {v['invariant']}")
        lines.extend(f"         {example}" for example in v["examples"])
    for name, v in report.get("detections", {}).items():
        lines.append(f"    {name:<3} {v['count']:>4} failures    {v['check']}")
        lines.extend(f"         {example}" for example in v["examples"])
    lines.append(f"  {'PASSED' if report['passed'] else 'FAILED'}")
    return "\n".join(lines)


def _pending_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    return [
        f"  pending transfers: {p['sent']} sent, {p['held']} held; ended {p['by_end_state']}",
        f"    posts in full {p['posts_in_full']}; posts for less {p['posts_for_less']};"
        f" voids {p['voids']}; {p['resolutions_duplicated']} posts and voids sent twice",
    ]


def _linked_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    return [
        f"  linked batches: {b['sent']} sent ({b['legs']} legs, {b['sent_twice']} sent twice);"
        f" ended {b['by_end_state']}",
        f"    by how they were doomed: {b['by_doom']}",
    ]


def _breaker_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    s = b["summary"]
    lines = [
        f"  breakers: {len(b['changes'])} changes; of {s['shard_faults']} faults on one shard,"
        f" {s['opened']} opened its breaker ({s['opened_within_10s']} within 10 s of the onset),"
        f" {s['closed_within_30s_of_heal']} closed within 30 s of the heal;"
        f" {s['fleet_faults_that_opened_a_breaker']} of {s['fleet_faults']} fleet faults opened one;"
        f" {s.get('corrupted_isolated_and_alerted', 0)} of {s.get('corrupted', 0)} corrupted shards"
        " isolated and alerted while corrupted",
    ]
    for p in b["per_fault"]:
        if "isolated_and_alerted" in p:
            lines.append(
                f"    {p['started_s']:6.1f}s {p['kind']:<27} shard {p['shard']}: latched after"
                f" {p['opened_after_s']} s, alert fired after {p['alert_fired_after_s']} s"
                f" (isolated and alerted: {p['isolated_and_alerted']}); alert cleared"
                f" {p['alert_cleared_after_heal_s']} s and breaker closed {p['closed_after_heal_s']} s"
                " after the heal"
            )
        elif "shard" in p:
            lines.append(
                f"    {p['started_s']:6.1f}s {p['kind']:<27} shard {p['shard']}: opened after"
                f" {p['opened_after_s']} s, closed {p['closed_after_heal_s']} s after the heal"
            )
        elif p["opened"]:
            lines.append(f"    {p['started_s']:6.1f}s {p['kind']:<27} opened shards {p['opened']}")
    return lines
