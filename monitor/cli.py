"""`ledger monitor run`: the entry point, the one place the monitor reads its configuration."""

from __future__ import annotations

import os
from pathlib import Path

import click

from infra.config import LedgerConfig
from infra.processes import run_until_signalled
from monitor.app import MonitorRun, run_monitor
from schemas.liquidity_rules import InvalidLiquidityMessage, LiquidityRule, decode_rules_file


@click.group("monitor")
def monitor_group() -> None:
    """Liquidity alerts and the shards' circuit breakers."""


def read_rules(path: Path | None) -> tuple[LiquidityRule, ...]:
    if path is None:
        return ()
    try:
        return decode_rules_file(path.read_bytes())
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--rules") from None
    except InvalidLiquidityMessage as e:
        raise click.BadParameter(f"{path}: {e}", param_hint="--rules") from None


@monitor_group.command("run")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="LEDGER_LIQUIDITY_RULES",
              help="Liquidity rules file ({\"v\": 1, \"rules\": [...]}), in force until an operator "
                   "sends a SetLiquidityRules on ledger.monitor-commands.")  # fmt: skip
@click.option("--tick", "tick_s", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              envvar="LEDGER_MONITOR_TICK_S", help="Seconds between assessments of the shards.")  # fmt: skip
def monitor_run(rules_file: Path | None, tick_s: float) -> None:
    """Watch balances, results and telemetry until SIGTERM: alerts onto ledger.alerts, breakers
    onto ledger.control."""
    rules = read_rules(rules_file)
    config = LedgerConfig.from_env(os.environ)
    run = MonitorRun(rules=rules, tick_s=tick_s)
    run_until_signalled(lambda stop: run_monitor(config, run, stop))
