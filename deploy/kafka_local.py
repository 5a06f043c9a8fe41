"""Apache Kafka from Maven Central jars, in KRaft mode, on loopback: one node or a 3-node quorum.

The jars are fetched once by `mvn dependency:copy-dependencies` from deploy/kafka/pom.xml into a
cache directory. Each node is a combined broker + controller in its own process group.

Clients and brokers authenticate with SASL/SCRAM-SHA-512 (users created at format time, passwords
generated into the cluster's folder); the KRaft StandardAuthorizer denies what no ACL allows.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from deploy.kafka_principals import ADMIN, PROVISIONED_SHARDS, KafkaCredentials
from deploy.processes import EngineError, ProcessRecord, free_port, run_checked, spawn, tail

POM = Path(__file__).parent / "kafka" / "pom.xml"

# The flags Kafka's own kafka-run-class.sh uses, with a small heap: the brokers here hold test data.
_JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
"""


def kafka_version() -> str:
    """The Kafka release pinned in deploy/kafka/pom.xml (the one place it is written)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(POM)  # noqa: S314 - the project's own file, not input
    node = pom.getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise EngineError(f"{POM} has no <kafka.version> property")
    return node.text.strip()


def _require_java17() -> str:
    java = shutil.which("java")
    if java is None:
        raise EngineError("Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r'version "(\d+)', done.stderr)
    if match is None or int(match.group(1)) < 17:
        raise EngineError(
            f"Kafka 4 needs Java 17+, found: {done.stderr.splitlines()[:1]}: "
            "apt-get install openjdk-17-jre-headless"
        )
    return java


def fetch_kafka(cache_dir: Path) -> Path:
    """Return a directory holding every jar the broker needs; download them on first use."""
    target = cache_dir.resolve() / f"kafka-{kafka_version()}"
    done_marker = target / ".complete"
    if done_marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EngineError("Maven is needed once to fetch Kafka's jars: apt-get install maven")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs fetching at once must not interleave
        if done_marker.exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run_checked(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            "fetching Kafka jars with Maven",
        )  # fmt: skip
        if not any(partial.glob("kafka_2.13-*.jar")):
            raise EngineError(f"Maven finished but {partial} holds no kafka_2.13 jar")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        done_marker.touch()
    return target


@dataclass
class KafkaNode:
    """One combined broker + controller."""

    node_id: int
    port: int
    controller_port: int
    root: Path
    process: ProcessRecord | None = None

    @property
    def properties_path(self) -> Path:
        return self.root / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"


@dataclass
class LocalKafka:
    """A local Kafka cluster of `brokers` nodes (1, or 3 for fault tests) under `root`."""

    root: Path
    jars: Path
    brokers: int = 1
    heap_mb: int = 384
    tie_to_owner: bool = True
    nodes: list[KafkaNode] = field(default_factory=list)
    shard_principals: int = PROVISIONED_SHARDS
    """shard-NN users created at format time (SCRAM users must exist before the first start)."""
    credentials: KafkaCredentials | None = None
    """Every principal's password: read from (or generated into) `credentials_path` on start."""

    def __post_init__(self) -> None:
        if self.brokers not in (1, 3):
            raise EngineError(f"brokers must be 1 or 3, not {self.brokers}")
        if not self.nodes:
            self.nodes = [
                KafkaNode(i, free_port(), free_port(), self.root / f"kafka-{i}")
                for i in range(1, self.brokers + 1)
            ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def processes(self) -> list[ProcessRecord]:
        return [n.process for n in self.nodes if n.process is not None]

    @property
    def credentials_path(self) -> Path:
        return self.root / "kafka-credentials.json"

    def client_args(self, principal: str = ADMIN) -> dict[str, Any]:
        """Keyword arguments for an aiokafka client connecting as `principal`."""
        if self.credentials is None:
            raise EngineError("the Kafka cluster has no credentials yet: start it first")
        return {
            "bootstrap_servers": self.bootstrap_servers,
            **self.credentials.security(principal).client_args(),
        }

    def start(self, timeout: float = 90.0) -> None:
        """Format every node's storage, start them all, and wait until the cluster serves."""
        java = _require_java17()
        cluster_id = run_checked(self._java(java, "kafka.tools.StorageTool", "random-uuid"), "kafka-storage")
        self.credentials = KafkaCredentials.load_or_generate(self.credentials_path, self.shard_principals)
        for node in self.nodes:
            self._configure(node)
            # One node bootstraps its own quorum; three share a static voter set (no flag).
            flag = ["--standalone"] if self.brokers == 1 else []
            run_checked(
                self._java(java, "kafka.tools.StorageTool", "format", *flag, "-t",
                           cluster_id.strip(), "-c", str(node.properties_path),
                           *self.credentials.scram_arguments()),
                f"formatting Kafka node {node.node_id} storage",
            )  # fmt: skip
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        self.wait_healthy(timeout)

    def start_node(self, node_id: int, *, wait: bool = True, timeout: float = 90.0) -> None:
        """(Re)start one formatted node, keeping its data, ports and log.

        From async code pass `wait=False` and await `wait_ready()`.
        """
        node = self._node(node_id)
        node.process = spawn(
            f"kafka-{node_id}",
            self.node_argv(node_id),
            node.root / "stdout.log",
            tie_to_owner=self.tie_to_owner,
        )
        if wait:
            self.wait_healthy(timeout)

    def node_argv(self, node_id: int) -> list[str]:
        """The command that runs one formatted node (`ledger dev up`'s supervisor restarts it with it)."""
        node = self._node(node_id)
        log4j = node.root / "log4j2.properties"
        return [
            _require_java17(), f"-Xmx{self.heap_mb}M", f"-Xms{self.heap_mb}M", *_JVM_FLAGS,
            f"-Dkafka.logs.dir={node.root}", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{self.jars}/*", "kafka.Kafka", str(node.properties_path),
        ]  # fmt: skip

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self._node(node_id)
        if node.process is not None:
            node.process.stop(signal.SIGKILL)

    def active_controller(self) -> int | None:
        """The node id of the KRaft quorum's leader, as recorded with the newest epoch in any node's
        quorum-state file (None while no leader is known: an election is under way)."""
        views = []
        for node in self.nodes:
            try:
                state = json.loads((node.root / "data" / "__cluster_metadata-0" / "quorum-state").read_text())
            except (OSError, ValueError):
                continue  # not written yet, or being replaced
            views.append((int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))))
        _, leader = max(views, default=(-1, -1))
        return leader if leader >= 0 else None

    def stop(self) -> None:
        """Stop every node (controlled shutdown, then SIGKILL after a timeout). Idempotent."""
        for node in self.nodes:
            if node.process is not None:
                node.process.send(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                node.process.stop(signal.SIGTERM, timeout=20)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Block until the cluster serves; from async code, await `wait_ready` instead."""
        asyncio.run(self.wait_ready(within_s=timeout))

    async def wait_ready(self, within_s: float = 90.0) -> None:
        """Wait until a metadata request sees every running node and an active controller."""
        expected = sum(1 for n in self.nodes if n.process is not None and n.process.alive())
        deadline = time.monotonic() + within_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and not node.process.alive():
                    raise EngineError(self._failure(f"Kafka node {node.node_id} exited", node))
            if not any(_port_open(n.port) for n in self.nodes):
                await asyncio.sleep(0.3)  # asking aiokafka now would only log connection errors
                continue
            try:
                seen = await _count_brokers(self.client_args())
                if seen >= expected:
                    return
                last_error = f"{seen} of {expected} brokers registered"
            except Exception as e:  # noqa: BLE001 - any client error means "not ready yet"
                last_error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.5)
        raise EngineError(self._failure(f"Kafka not healthy after {within_s:.0f}s ({last_error})", None))

    async def wait_in_sync(self, within_s: float = 120.0) -> None:
        """Wait until every partition's replicas are all in sync again: after a node restarts, it
        is healed only when it has caught up (until then one more failure stops writes at min ISR)."""
        deadline = time.monotonic() + within_s
        lagging = -1
        while time.monotonic() < deadline:
            try:
                if (lagging := await _under_replicated(self.client_args())) == 0:
                    return
            except Exception:  # noqa: BLE001, S110 - a node still starting: ask again
                pass
            await asyncio.sleep(0.5)
        raise EngineError(f"{lagging} partitions still under-replicated after {within_s:.0f}s")

    def _node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise EngineError(f"no Kafka node {node_id}")

    def _java(self, java: str, main: str, *args: str) -> list[str]:
        return [java, "-Xmx128M", "-cp", f"{self.jars}/*", main, *args]

    def _failure(self, what: str, node: KafkaNode | None) -> str:
        nodes = [node] if node is not None else self.nodes
        logs = "\n".join(f"--- {n.log_path} (last lines)\n{tail(n.log_path, 15)}" for n in nodes)
        return f"{what}\n{logs}"

    def _configure(self, node: KafkaNode) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        (node.root / "log4j2.properties").write_text(_LOG4J2.format(log=node.log_path))
        listeners = f"SASL_PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "listeners": listeners,
            "advertised.listeners": listeners,
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            **self._security_properties(),
            "log.dirs": str(node.root / "data"),
            "group.initial.rebalance.delay.ms": "0",  # the 3 s default only slows tests
            "auto.create.topics.enable": "false",  # topics are created on purpose, with their settings
            "num.partitions": "1",
        }
        rf, isr = (1, 1) if self.brokers == 1 else (3, 2)
        for key in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
            props[f"{key}.replication.factor"] = str(rf)
        for key in ("transaction.state.log", "share.coordinator.state.topic"):
            props[f"{key}.min.isr"] = str(isr)
        props |= {
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(isr),
            "unclean.leader.election.enable": "false",
            # A dead node holds up every acks=all write it replicates until the controller fences
            # it: 9 s by default, the whole stall a broker crash causes. Loopback needs less.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
        }
        if self.brokers == 1:
            props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{node.controller_port}"
        else:
            props["controller.quorum.voters"] = ",".join(
                f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes
            )
        # The file holds the admin password: readable by its owner only.
        fd = os.open(node.properties_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in props.items()))

    def _security_properties(self) -> dict[str, str]:
        """SCRAM for clients and between brokers. The controller listener uses PLAIN with a static
        user (SCRAM users live in the metadata log the controllers are still starting to read); it
        authenticates too, so nothing on loopback reaches a controller as an anonymous super user."""
        assert self.credentials is not None  # set by start() before any node is configured
        password = self.credentials.passwords[ADMIN]
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                f'{scram} required username="{ADMIN}" password="{password}";',
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                f'{plain} required username="{ADMIN}" password="{password}" user_{ADMIN}="{password}";',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        }  # fmt: skip


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _under_replicated(kafka_args: dict[str, Any]) -> int:
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=5000)
    await admin.start()
    try:
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    return sum(len(p["isr"]) < len(p["replicas"]) for t in topics for p in t["partitions"])


async def _count_brokers(kafka_args: dict[str, Any]) -> int:
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=5000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        if cluster.get("controller_id", -1) < 0:
            return 0
        return len(cluster["brokers"])
    finally:
        await admin.close()
