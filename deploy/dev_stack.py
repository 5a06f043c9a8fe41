"""`ledger dev up`: a stack started, or resumed from its data folder, and handed to a supervisor.

A data folder holds a manifest (`dev-stack.json`, owner-only: ports, the PostgreSQL superuser's
password, the shape of the stack) beside the credentials it generated, so a later `dev up` can
start the same engines on the same data and ports after `dev down`, a reboot or a crash.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy.kafka_local import KafkaNode, LocalKafka, fetch_kafka
from deploy.kafka_principals import PROVISIONED_SHARDS, KafkaCredentials
from deploy.postgres_local import LocalPostgres
from deploy.processes import EngineError, ProcessRecord, spawn, tail
from deploy.stack import LocalStack, StackSettings, load_state, stack_state, stop_recorded, write_state
from deploy.supervisor import ChildSpec, supervisor_log

MANIFEST = "dev-stack.json"
READY_WITHIN_S = 60.0


@dataclass(frozen=True)
class UpResult:
    state: dict[str, Any]
    how: str
    """started, resumed, running (nothing to do) or supervised (a new supervisor took over)."""


def manifest_path(data_dir: Path) -> Path:
    return data_dir / MANIFEST


def write_manifest(stack: LocalStack, *, workers: bool, api_port: int | None) -> None:
    pg, kafka = stack.postgres, stack.kafka
    manifest = {
        "brokers": stack.settings.brokers,
        "shards": stack.settings.shards,
        "workers": workers,
        "api_port": api_port,
        "postgres": None if pg is None else
            {"port": pg.port, "password": pg.password, "bindir": str(pg.bindir), "user": pg.user},
        "kafka": None if kafka is None else {
            "heap_mb": kafka.heap_mb,
            "nodes": [{"node_id": n.node_id, "port": n.port, "controller_port": n.controller_port}
                      for n in kafka.nodes],
        },
    }  # fmt: skip
    path = manifest_path(stack._root())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a password
    with os.fdopen(fd, "w") as out:
        json.dump(manifest, out, indent=2)


def _child_specs(stack: LocalStack, plan: list[tuple[str, tuple[str, ...]]]) -> list[ChildSpec]:
    """Engines first, then the ledger's processes: `dev down` stops them in the reverse order."""
    specs = []
    if stack.postgres is not None:
        pg = stack.postgres
        pg_argv = (str(pg.bindir / "postgres"), "-D", str(pg.data_dir))
        specs.append(ChildSpec("postgres", pg_argv, str(pg.log_path), {"LC_ALL": "C"}, pg.user))
    if stack.kafka is not None:
        for node in stack.kafka.nodes:
            argv = tuple(stack.kafka.node_argv(node.node_id))
            specs.append(ChildSpec(f"kafka-{node.node_id}", argv, str(node.root / "stdout.log"), {}))
    ledger = str(Path(sys.executable).with_name("ledger"))
    for name, args in plan:
        # Only what differs from the supervisor's own environment (which it inherits from this
        # command) is recorded: the process's role, endpoints and credentials.
        env = {k: v for k, v in stack.process_env(name).items()
               if k.startswith(("LEDGER_", "KAFKA_")) or os.environ.get(k) != v}  # fmt: skip
        specs.append(ChildSpec(name, (ledger, *args), str(stack.logs_dir / f"{name}.log"), env))
    return specs


def _what_to_do(data_dir: Path) -> str:
    return f"delete it (rm -r {data_dir}) or choose another --data-dir"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the engines bind: connections of the last run still in TIME_WAIT do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _resume_engines(settings: StackSettings, data_dir: Path) -> tuple[LocalStack, dict[str, Any]]:
    """The engines of a stopped stack, started again on their data and ports."""
    try:
        manifest: dict[str, Any] = json.loads(manifest_path(data_dir).read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"cannot read {manifest_path(data_dir)} ({e}): {_what_to_do(data_dir)}") from e
    settings = replace(settings, brokers=manifest["brokers"], shards=manifest["shards"], data_dir=data_dir)
    pg, kafka = manifest["postgres"], manifest["kafka"]
    ports = [("PostgreSQL", pg["port"])] if pg else []
    for n in kafka["nodes"] if kafka else []:
        ports += [
            (f"Kafka node {n['node_id']}", n["port"]),
            (f"Kafka node {n['node_id']}", n["controller_port"]),
        ]
    taken = [f"{what} ({port})" for what, port in ports if not _port_free(port)]
    if taken:
        raise EngineError(
            f"the stack in {data_dir} is stopped, but its ports are in use: {', '.join(taken)}. Stop what "
            f"holds them (another stack? `ledger dev status --home ...`), or {_what_to_do(data_dir)}"
        )
    stack = LocalStack(settings, tie_to_owner=False)
    stack.root = data_dir
    try:
        if pg:
            stack.postgres = LocalPostgres(data_dir / "postgres", Path(pg["bindir"]), pg["user"], False,
                                           pg["port"], pg["password"])  # fmt: skip
            stack.postgres.start()
        if kafka:
            stack.kafka = LocalKafka(
                data_dir, fetch_kafka(settings.cache_dir or settings.home / "cache"), settings.brokers,
                kafka["heap_mb"], False,
                [KafkaNode(n["node_id"], n["port"], n["controller_port"], data_dir / f"kafka-{n['node_id']}")
                 for n in kafka["nodes"]],
                max(settings.shards, PROVISIONED_SHARDS),
            )  # fmt: skip
            stack.kafka.credentials = KafkaCredentials.load(stack.kafka.credentials_path)
            for node in stack.kafka.nodes:
                stack.kafka.start_node(node.node_id, wait=False)
            stack.kafka.wait_healthy()
    except EngineError as e:
        stack.stop()
        raise EngineError(f"could not resume the stack in {data_dir}: {e}\n{_what_to_do(data_dir)}") from e
    return stack, manifest


def _new_stack(settings: StackSettings) -> LocalStack:
    data_dir = settings.data_dir
    if data_dir is not None and ((data_dir / "postgres").exists() or any(data_dir.glob("kafka-*"))):
        raise EngineError(
            f"{data_dir} holds engine data, but no record (`{MANIFEST}`) of a stack `ledger dev up` "
            f"started: {_what_to_do(data_dir)}"
        )
    stack = LocalStack(settings, tie_to_owner=False)
    stack.start()
    return stack


def up(
    home: Path, settings: StackSettings, *, workers: bool, api_port: int | None, free_port: Callable[[], int]
) -> UpResult:
    """Start (or resume, or leave running) the stack recorded in HOME or kept in its data folder."""
    state = load_state(home)
    if state is not None:
        found = _recorded(home, state, settings)
        if found is not None:
            return found
    data_dir = settings.data_dir.resolve() if settings.data_dir is not None else None
    resuming = data_dir is not None and manifest_path(data_dir).exists()
    if resuming:
        assert data_dir is not None
        stack, manifest = _resume_engines(settings, data_dir)
        workers, api_port = bool(manifest["workers"]), manifest["api_port"]
    else:
        stack = _new_stack(settings)
        api_port = (api_port or free_port()) if workers else None
    supervisor: ProcessRecord | None = None
    try:
        plan = stack.prepare_ledger(api_port=api_port, monitor=()) if workers else []
        write_manifest(stack, workers=workers, api_port=api_port)
        state = stack_state(stack)
        specs = _child_specs(stack, plan)
        state["supervised"] = [s.to_json() for s in specs]
        write_state(home, state)
        if specs:
            supervisor = start_supervisor(home, state)
    except BaseException:
        if supervisor is not None:
            stop_recorded(home)
        else:
            stack.stop()
            (home / "stack.json").unlink(missing_ok=True)
        raise
    return UpResult(load_state(home) or state, "resumed" if resuming else "started")


def _recorded(home: Path, state: dict[str, Any], settings: StackSettings) -> UpResult | None:
    """What to do about a stack HOME records already; None when it stopped (then resume it)."""
    recorded_dir = Path(state["data_dir"]) if state.get("data_dir") else None
    if (
        settings.data_dir is not None
        and recorded_dir is not None
        and settings.data_dir.resolve() != recorded_dir
    ):
        raise EngineError(
            f"{home / 'stack.json'} records a stack in {recorded_dir}, not {settings.data_dir}: "
            "`ledger dev down` it first, or use another --home"
        )
    processes = [ProcessRecord.from_json(p) for p in state.get("processes", [])]
    supervisor = ProcessRecord.from_json(state["supervisor"]) if state.get("supervisor") else None
    if supervisor is not None and supervisor.alive():
        return UpResult(state, "running")  # it restarts whatever died
    if any(p.alive() for p in processes):
        if not state.get("supervised"):
            return UpResult(state, "running")  # recorded by `ledger demo --keep`: unsupervised
        start_supervisor(home, state)  # it takes over what runs and starts what does not
        return UpResult(load_state(home) or state, "supervised")
    # Nothing runs (a reboot, a crash): resume it from its data folder, then forget this record.
    if recorded_dir is None or not manifest_path(recorded_dir).exists():
        stop_recorded(home)
        return None
    (home / "stack.json").unlink()
    return None if settings.data_dir is not None else _resume_from(home, settings, recorded_dir)


def _resume_from(home: Path, settings: StackSettings, data_dir: Path) -> UpResult:
    return up(home, replace(settings, data_dir=data_dir), workers=True, api_port=None, free_port=lambda: 0)


def start_supervisor(home: Path, state: Mapping[str, Any]) -> ProcessRecord:
    """Spawn `ledger dev supervise` (detached) and wait until it has started every process."""
    ledger = str(Path(sys.executable).with_name("ledger"))
    log = supervisor_log(state)
    record = spawn("supervisor", [ledger, "dev", "supervise", "--home", str(home.resolve())], log,
                   tie_to_owner=False)  # fmt: skip
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        now = load_state(home) or {}
        mine = (now.get("supervisor") or {}).get("pid") == record.pid
        if mine and len(now.get("processes", [])) == len(now.get("supervised", [])):
            return record
        if not record.alive():
            raise EngineError(f"the supervisor exited; see {log}:\n{tail(log, 20)}")
        time.sleep(0.1)
    raise EngineError(f"the supervisor started nothing within {READY_WITHIN_S:.0f}s; see {log}")
