"""The liquidity rules file as `ledger monitor run` reads it (the command itself is in
deploy/monitor_cli.py: it hands the monitor an auditor from deploy/)."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.liquidity_rules import InvalidLiquidityMessage, LiquidityRule, decode_rules_file


def read_rules(path: Path | None) -> tuple[LiquidityRule, ...]:
    if path is None:
        return ()
    try:
        return decode_rules_file(path.read_bytes())
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--rules") from None
    except InvalidLiquidityMessage as e:
        raise click.BadParameter(f"{path}: {e}", param_hint="--rules") from None
