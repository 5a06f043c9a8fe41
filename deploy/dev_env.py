"""`ledger dev env`: the settings of the local stack as shell `export` lines."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from deploy.exit_codes import NOT_FOUND
from deploy.stack_env import ROLES, NoLocalStack, stack_env


@click.command("env")
@click.option("--home", type=click.Path(path_type=Path, file_okay=False), default=Path(".ledger"),
              show_default=True, envvar="LEDGER_HOME",
              help="Where `ledger dev up` recorded the stack. [env: LEDGER_HOME]")  # fmt: skip
@click.option("--as", "role", type=click.Choice(ROLES), default="operator", show_default=True,
              help="Whose credentials: client (transfers), operator (also accounts), reader (read-only "
                   "database, no Kafka), admin (init, acl apply).")  # fmt: skip
def dev_env(home: Path, role: str) -> None:
    """Print `export` lines that point every `ledger` command at the local stack, as ROLE:

    eval "$(ledger dev env)"

    Without them, commands find the stack anyway (in LEDGER_HOME, default .ledger); exported
    variables win over it. Exit 3 when no stack is recorded.
    """
    try:
        env = stack_env(home, role)
    except NoLocalStack as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(NOT_FOUND)
    for name, value in sorted(env.items()):
        click.echo(f"export {name}={shlex.quote(value)}")
