"""`ledger doctor`: read the whole ledger, explain each problem and print the command that fixes it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap

import click

from deploy.doctor.facts import Thresholds
from deploy.doctor.gather import gather
from deploy.doctor.rules import Finding, diagnose, needs_action
from deploy.exit_codes import CHECK_FAILED, OK
from deploy.stack_env import home_of, ledger_config, read_state


def _show(findings: list[Finding]) -> None:
    for f in findings:
        click.echo(f"{f.severity.upper()} {f.code}: {f.subject}")
        click.echo(textwrap.fill(f.explanation, 100, initial_indent="  ", subsequent_indent="  "))
        click.echo("  fix:")
        for line in f.fix.splitlines():
            click.echo(f"    {line}")
        click.echo()
    counts = {s: sum(f.severity == s for f in findings) for s in ("critical", "warning", "info")}
    if not findings:
        click.echo("ledger doctor: no problem found")
    else:
        click.echo("ledger doctor: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--stuck-after", type=click.FloatRange(0), default=300.0, show_default=True,
              envvar="LEDGER_DOCTOR_STUCK_AFTER_S",
              help="Seconds in flight after which a saga is reported stuck."
                   " [env: LEDGER_DOCTOR_STUCK_AFTER_S]")  # fmt: skip
@click.option("--lag-warning", type=click.IntRange(0), default=1000, show_default=True,
              envvar="LEDGER_DOCTOR_LAG_WARNING",
              help="Records a consumer group may be behind. [env: LEDGER_DOCTOR_LAG_WARNING]")  # fmt: skip
@click.option("--outbox-age", type=click.FloatRange(0), default=60.0, show_default=True,
              envvar="LEDGER_DOCTOR_OUTBOX_AGE_S",
              help="Seconds an outbox row may wait to be published."
                   " [env: LEDGER_DOCTOR_OUTBOX_AGE_S]")  # fmt: skip
@click.option("--probe", type=click.FloatRange(0.2, 60), default=1.5, show_default=True,
              help="Seconds between the two looks at each consumer group (a group behind whose"
                   " commits did not move is stalled).")  # fmt: skip
def doctor_command(
    as_json: bool, stuck_after: float, lag_warning: int, outbox_age: float, probe: float
) -> None:
    """Read the whole ledger and explain each problem in plain words, with the exact command that
    fixes it: sagas parked or stuck, reconciliation and hash chains, consumer lag, outboxes,
    circuit breakers, liquidity alerts still firing, and a local stack's processes.

    Reads PostgreSQL as the reader role; Kafka as a principal that may describe the ledger's
    consumer groups and read its control and alerts topics (a local stack's admin). A source it
    cannot reach is a critical finding of its own.

    Exit 0 when nothing is critical or a warning (info findings allowed), 1 otherwise.
    """
    db, kafka = ledger_config("reader", os.environ), ledger_config("admin", os.environ)
    state = read_state(home_of(os.environ))
    # The recorded local stack is the ledger examined only when it is the one we talk to.
    local = (
        state
        if state and state["endpoints"]["kafka_bootstrap_servers"] == kafka.kafka_bootstrap_servers
        else None
    )
    thresholds = Thresholds(stuck_after_s=stuck_after, lag_warning=lag_warning, outbox_oldest_s=outbox_age)
    findings = diagnose(asyncio.run(gather(db, kafka, local, thresholds, probe)))
    if as_json:
        report = {"ok": not needs_action(findings), "findings": [f.as_json() for f in findings]}
        click.echo(json.dumps(report, indent=2))
    else:
        _show(findings)
    sys.exit(CHECK_FAILED if needs_action(findings) else OK)
