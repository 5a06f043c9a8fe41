"""Where a `ledger` command finds its ledger: the environment, else the local stack `dev up` recorded.

With neither LEDGER_DATABASE_URL nor KAFKA_BOOTSTRAP_SERVERS set, a command reads the endpoints and
credential files in LEDGER_HOME/stack.json and connects with the least privilege its work needs:

- `client`: the payment client's Kafka principal (transfers);
- `operator`: a client that may also manage accounts (open-account; `ledger dev env`'s default);
- `reader`: no Kafka credentials, the read-only database role (status, balance, verify, ...);
- `admin`: the Kafka super user and the database owner (init, acl apply).

Client and operator get the reader's database role too: they read nothing, and LedgerConfig wants
a DSN. Any variable that is set wins over the recorded value. Kept light (no driver imports): every
command calls it before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.config import KafkaSecurity, LedgerConfig
from schemas.errors import ConfigurationError, LedgerError
from schemas.topics import Namespace

ROLES = ("client", "operator", "reader", "admin")


class NoLocalStack(LedgerError):
    """No stack is recorded where the command looked."""

    retriable = False


def home_of(env: Mapping[str, str]) -> Path:
    return Path(env.get("LEDGER_HOME") or ".ledger")


def read_state(home: Path) -> dict[str, Any] | None:
    """HOME/stack.json as `ledger dev up` wrote it, or None. Here, not in deploy.stack, so that the
    commands that only read it do not import what starts engines and stay quick."""
    path = home / "stack.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read {path}: {e}; remove it if no stack is running") from None
    return state


def stack_env(home: Path, role: str) -> dict[str, str]:
    """The LEDGER_* variables that reach the stack recorded in `home` as `role` (one of ROLES)."""
    if role not in ROLES:
        raise ConfigurationError(f"no role {role!r}; one of {', '.join(ROLES)}")
    state = read_state(home)
    if state is None:
        raise NoLocalStack(
            f"no local stack is recorded in {home / 'stack.json'} (`ledger dev up` starts one)"
        )
    endpoints = state["endpoints"]
    config = LedgerConfig(
        database_url=_database_url(endpoints, role),
        kafka_bootstrap_servers=endpoints["kafka_bootstrap_servers"],
        replication_factor=3 if endpoints.get("brokers", 1) >= 3 else 1,
        kafka_security=_kafka_security(state.get("kafka_credentials"), role),
    )
    return config.as_env()


def _database_url(endpoints: Mapping[str, Any], role: str) -> str:
    owner: str = endpoints["database_url"]
    roles_file = endpoints.get("database_roles_file")
    if role == "admin" or not roles_file:  # servers given from outside: the DSN they were given
        return owner
    from deploy.postgres_roles import LedgerRoles, read_passwords, role_dsn  # noqa: PLC0415 - a stack's

    reader = LedgerRoles(Namespace(), 0).reader  # a local stack's roles have no namespace prefix
    return role_dsn(owner, reader, read_passwords(Path(roles_file))[reader])


def _kafka_security(credentials_file: str | None, role: str) -> KafkaSecurity:
    if role == "reader" or not credentials_file:  # no credentials were made: a cluster from outside
        return KafkaSecurity()
    from deploy.kafka_principals import KafkaCredentials  # noqa: PLC0415 - only with a stack

    return KafkaCredentials.load(Path(credentials_file)).security(role)


def ledger_config(role: str, env: Mapping[str, str]) -> LedgerConfig:
    """The ledger a command of `role` talks to: the environment's, completed from the local stack
    when the environment names none."""
    if not env.get("LEDGER_DATABASE_URL") and not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        try:
            env = {**stack_env(home_of(env), role), **env}
        except NoLocalStack as e:
            raise ConfigurationError(
                f"LEDGER_DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS not set, and {e}; "
                '`eval "$(ledger dev env)"` exports a local stack\'s settings'
            ) from None
    return LedgerConfig.from_env(env)
