"""`ledger monitor run`: the entry point, the one place the monitor reads its configuration. Here in
deploy/, not in monitor/, because it hands the monitor its Auditor (deploy/ledger_audit.py), which
reads what shards/ and coordinator/ own."""

from __future__ import annotations

import os
from pathlib import Path

import click

from deploy.ledger_audit import PostgresAuditor
from infra.config import LedgerConfig
from infra.metrics import METRICS_PORT_HELP, metrics_endpoint, setup_metrics
from infra.processes import run_until_signalled
from monitor.app import MonitorRun, run_monitor
from monitor.cli import read_rules


@click.group("monitor")
def monitor_group() -> None:
    """Liquidity alerts, the shards' circuit breakers, the continuous audit."""


@monitor_group.command("run")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="LEDGER_LIQUIDITY_RULES",
              help="Liquidity rules file ({\"v\": 1, \"rules\": [...]}), in force until an operator "
                   "sends a SetLiquidityRules on ledger.monitor-commands.")  # fmt: skip
@click.option("--tick", "tick_s", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              envvar="LEDGER_MONITOR_TICK_S", help="Seconds between assessments of the shards.")  # fmt: skip
@click.option("--audit-every", "audit_every_s", type=click.FloatRange(0, 86400), default=30.0,
              show_default=True, envvar="LEDGER_AUDIT_EVERY_S",
              help="Seconds between audits of the whole ledger (every hash chain recomputed, every "
                   "journal reconciled with every saga); 0: none. [env: LEDGER_AUDIT_EVERY_S]")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="LEDGER_METRICS_PORT",
              help=METRICS_PORT_HELP)  # fmt: skip
def monitor_run(
    rules_file: Path | None, tick_s: float, audit_every_s: float, metrics_port: int | None
) -> None:
    """Watch balances, results and telemetry, and audit the ledger, until SIGTERM: alerts onto
    ledger.alerts, breakers onto ledger.control."""
    rules = read_rules(rules_file)
    config = LedgerConfig.from_env(os.environ)
    setup_metrics("ledger-monitor", metrics_endpoint(metrics_port, os.environ), os.environ)
    run = MonitorRun(rules=rules, tick_s=tick_s, audit_every_s=audit_every_s)
    auditor = PostgresAuditor(config)
    run_until_signalled(lambda stop: run_monitor(config, run, stop, auditor))
