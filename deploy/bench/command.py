"""`ledger bench`: options (each also an environment variable), stacks, sweeps and the output."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
import click
import psutil

from deploy.bench.drivers import Bench, LoadSettings
from deploy.bench.meter import GENERATOR, ProcessMeter
from deploy.bench.plots import plot_runs, plot_sweep
from deploy.bench.report import RunReport
from deploy.bench.workload import WorkloadSettings
from deploy.kafka_local import kafka_version
from deploy.kafka_principals import OPERATOR
from deploy.ledger_init import read_partition_map
from deploy.processes import EngineError, ProcessRecord
from deploy.stack import LocalStack, StackSettings, load_state, recorded_kafka_security
from infra import event_loop
from infra.config import LedgerConfig

SWEEPABLE = ("cross", "shards")


def _option(*names: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A click option that also reads LEDGER_BENCH_<NAME> (the faststream habit)."""
    env = "LEDGER_BENCH_" + names[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, show_default=True, **kwargs)


@click.command()
@_option("--mode", type=click.Choice(["open", "max"]), default="open",
         help="open: offer --rate; max: a closed loop finds the highest sustained rate, then an open "
              "loop at --latency-at of it measures latency under that load.")  # fmt: skip
@_option("--rate", type=click.FloatRange(1), default=500.0, help="Offered transfers/s (open loop).")
@_option("--clients", type=click.IntRange(1), default=2000, help="Transfers outstanding at once (max mode).")
@_option("--latency-at", type=click.FloatRange(0.05, 1), default=0.7, help="Max mode: latency load.")
@_option("--duration", type=click.FloatRange(1), default=30.0, help="Measured seconds per run.")
@_option("--warmup", type=click.FloatRange(0), default=5.0, help="Unmeasured seconds first.")
@_option("--drain", type=click.FloatRange(1), default=120.0, help="Longest wait for the last results.")
@_option("--accounts", type=click.IntRange(10), default=1000)
@_option("--shards", type=click.IntRange(1, 64), default=4)
@_option("--coordinators", type=click.IntRange(1, 8), default=2, help="Coordinator processes (one group).")
@_option("--cross", type=click.FloatRange(0, 1), default=0.1, help="Cross-shard share of transfers.")
@_option("--zipf", type=click.FloatRange(0), default=0.0, help="Skew of debit accounts (0 = uniform).")
@_option(
    "--hot",
    default=None,
    metavar="N:SHARE",
    callback=lambda _c, _p, v: _parse_hot(v),
    help="N merchant accounts receive SHARE of the transfers, e.g. 3:0.3.",
)
@_option("--amounts", type=click.Choice(["uniform", "log"]), default="uniform",
         help="Amount distribution up to --max-amount minor units.")  # fmt: skip
@_option("--max-amount", type=click.IntRange(1), default=10_000)
@_option("--reject", type=click.FloatRange(0, 1), default=0.1,
         help="Share of transfers sized to fail for insufficient funds.")  # fmt: skip
@_option("--pending", type=click.FloatRange(0, 1), default=0.0,
         help="Share of transfers sent as a hold (60 s) and, once held, posted: in full, 1 in 5 "
              "for half, 1 in 10 voided instead. Latency to the post's or void's result: path "
              "`pending`.")  # fmt: skip
@_option("--linked", type=click.FloatRange(0, 1), default=0.0,
         help="Share of transfers that open a linked batch (all legs or none): that transfer and the "
              "next --legs - 1 the workload draws, sent as one TransferBatch. Latency to the batch's "
              "result: path `linked`; CPU per transfer counts each leg.")  # fmt: skip
@_option("--legs", type=click.IntRange(2, 100), default=3, help="Legs of each linked batch.")
@_option("--seed", type=int, default=1)
@_option("--baseline/--no-baseline", default=False, help="Also run the naive single-PostgreSQL ledger.")
@_option("--connections", type=click.IntRange(1), default=32, help="The baseline's connections.")
@_option("--sweep", default=None, metavar="PARAM=V1,V2,...",
         help="Repeat the benchmark for each value of cross or shards: one table, one plot.")  # fmt: skip
@_option("--running", is_flag=True, help="Use the stack `ledger dev up` started (else start one).")
@_option("--quick", is_flag=True, help="CI's smoke run (< 2 min): 200 accounts, 200/s for 8 s, baseline.")
@_option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Write the report.")
@_option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), help="Write a PNG plot.")
@_option("--profile", "profile_dir", type=click.Path(path_type=Path, file_okay=False),
         help="py-spy every Python process in the measured window; recordings go here.")  # fmt: skip
@_option("--home", type=click.Path(path_type=Path, file_okay=False), default=Path(".ledger"))
def bench(**o: Any) -> None:
    """Measure the ledger end to end (produce -> result read) through its public topics; exit 1 if
    the correctness gate fails (a transfer without a result, or any reconciliation violation)."""
    if o["quick"]:
        o |= {
            "mode": "open",
            "rate": 200.0,
            "duration": 8.0,
            "warmup": 2.0,
            "accounts": 200,
            "baseline": True,
        }
    workload, load = settings_of(o)
    document = document_of(o, workload, load)
    if o["sweep"]:
        parameter, values = _parse_sweep(o["sweep"])
        rows: list[dict[str, object]] = []
        runs: list[list[RunReport]] = []
        for value in values:
            shards = int(value) if parameter == "shards" else o["shards"]
            point = replace(workload, cross_fraction=float(value)) if parameter == "cross" else workload
            click.echo(f"--- {parameter} = {value}")
            reports = _execute(o, shards, point, load, document)
            _echo(reports)
            rows.append(sweep_row(value, reports))
            runs.append(reports)
        click.echo(sweep_table(parameter, rows))
        points = [{"value": v, "runs": [r.to_json() for r in rs]} for v, rs in zip(values, runs, strict=True)]
        document |= {"sweep": {"parameter": parameter, "rows": rows, "points": points}}
        if o["plot_path"]:
            plot_sweep(parameter, rows, o["plot_path"])
        passed = all(r.passed for rs in runs for r in rs)
    else:
        reports = _execute(o, o["shards"], workload, load, document)
        _echo(reports)
        document["runs"] = [r.to_json() for r in reports]
        if o["plot_path"]:
            plot_runs(reports, o["plot_path"])
        passed = all(r.passed for r in reports)
    m = document["machine"]
    click.echo(
        f"machine: {m['cpus']} cpus ({m['cpu_model']}), {m['memory_gib']} GiB, {m['system']}; "
        + ", ".join(f"{k} {v}" for k, v in document.get("versions", {}).items())
        + f"; seed {o['seed']}"
    )
    if o["json_path"]:
        o["json_path"].write_text(json.dumps(document, indent=2))
    if not passed:
        sys.exit(1)


def settings_of(o: dict[str, Any]) -> tuple[WorkloadSettings, LoadSettings]:
    """The workload and the load the parsed options ask for."""
    workload = WorkloadSettings(
        accounts=o["accounts"], cross_fraction=o["cross"], zipf_s=o["zipf"], amounts=o["amounts"],
        max_amount=o["max_amount"], reject_fraction=o["reject"], seed=o["seed"],
        hot_accounts=o["hot"][0], hot_share=o["hot"][1], pending_fraction=o["pending"],
        linked_fraction=o["linked"], linked_legs=o["legs"],
    )  # fmt: skip
    load = LoadSettings(
        mode=o["mode"], rate=o["rate"], clients=o["clients"], latency_at=o["latency_at"],
        duration_s=o["duration"], warmup_s=o["warmup"], drain_s=o["drain"], connections=o["connections"],
        profile_dir=o["profile_dir"],
    )  # fmt: skip
    return workload, load


def document_of(o: dict[str, Any], workload: WorkloadSettings, load: LoadSettings) -> dict[str, Any]:
    """The JSON report's head: the machine and every setting of the run."""
    return {"machine": _machine(), "seed": o["seed"], "workload": asdict(workload),
            "load": asdict(load) | {"profile_dir": str(o["profile_dir"])}}  # fmt: skip


def _parse_hot(value: str | None) -> tuple[int, float]:
    """`--hot N:SHARE` -> (N, SHARE); none -> (0, 0.0)."""
    if value is None:
        return 0, 0.0
    count, _, share = value.partition(":")
    try:
        n, fraction = int(count), float(share)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected N:SHARE, e.g. 3:0.3") from None
    if not (1 <= n <= 100 and 0 < fraction <= 1):
        raise click.BadParameter(f"{value!r}: N is 1..100 accounts, SHARE a fraction in (0, 1]")
    return n, fraction


def _execute(
    o: dict[str, Any], shards: int, workload: WorkloadSettings, load: LoadSettings, document: dict[str, Any]
) -> list[RunReport]:
    with _ledger(o["home"], shards, o["coordinators"], o["running"]) as (config, processes):
        pmap = asyncio.run(read_partition_map(config))  # the stack's admin initialised it
        processes[GENERATOR] = os.getpid()
        python = {n: p for n, p in processes.items() if n.startswith(("shard", "coordinator", "load"))}
        bench = Bench(config, pmap, workload, load, ProcessMeter(processes), python)
        document["versions"] = asyncio.run(_versions(config.database_url))

        async def everything() -> list[RunReport]:
            reports = await bench.ledger()
            return reports + (await bench.baseline() if o["baseline"] else [])

        return event_loop.run(everything(), os.environ)  # uvloop here too


@contextmanager
def _ledger(
    home: Path, shards: int, coordinators: int, running: bool
) -> Iterator[tuple[LedgerConfig, dict[str, int]]]:
    """The servers and the ledger's processes: the `ledger dev up` stack, or a new one."""
    if running:
        state = load_state(home)
        if state is None:
            raise EngineError(f"no running stack recorded under {home}: run `ledger dev up` first")
        e = state["endpoints"]
        records = [ProcessRecord.from_json(p) for p in state["processes"]]
        yield (
            LedgerConfig(
                e["database_url"],
                e["kafka_bootstrap_servers"],
                kafka_security=recorded_kafka_security(state, OPERATOR),
            ),
            {p.name: p.pid for p in records if p.alive()},
        )
        return
    with LocalStack(StackSettings.from_env(os.environ, home=home, shards=shards)) as stack:
        stack.start_ledger(coordinators=coordinators)
        yield stack.ledger_config(OPERATOR), {p.name: p.pid for p in stack.processes if p.alive()}


def _echo(reports: list[RunReport]) -> None:
    for report in reports:
        click.echo(report.table())
    if (ratio := _ratio(reports)) is not None:
        click.echo(f"ledger / baseline throughput: {ratio:.2f}x ({reports[0].mode} vs its baseline run)")


def _ratio(reports: list[RunReport]) -> float | None:
    ledger = [r for r in reports if r.name == "ledger"]
    base = [r for r in reports if r.name.startswith("baseline")]
    if not ledger or not base or not base[0].achieved_per_s:
        return None
    return ledger[0].achieved_per_s / base[0].achieved_per_s


def sweep_row(value: str, reports: list[RunReport]) -> dict[str, object]:
    """The first run of each target (the flat-out one in max mode) and the ledger's last (latency)."""
    ledger = [r for r in reports if r.name == "ledger"]
    base = [r for r in reports if r.name.startswith("baseline")]
    latency = ledger[-1]
    return {
        "value": value,
        "ledger_per_s": round(ledger[0].achieved_per_s),
        "latency_run": latency.mode,
        "p99_same_ms": latency.percentiles_ms("same_shard").get("p99"),
        "p99_cross_ms": latency.percentiles_ms("cross_shard").get("p99"),
        "baseline_per_s": round(base[0].achieved_per_s) if base else None,
        "baseline_p99_ms": base[-1].percentiles_ms().get("p99") if base else None,
        "ratio": round(ratio, 2) if (ratio := _ratio(reports)) is not None else None,
        "passed": all(r.passed for r in reports),
    }


def sweep_table(parameter: str, rows: list[dict[str, object]]) -> str:
    def cell(v: object) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    keys = ["value", "ledger_per_s", "p99_same_ms", "p99_cross_ms", "baseline_per_s", "ratio", "passed"]
    lines = [f"sweep over {parameter} (latency from: {rows[0]['latency_run']})" if rows else "",
             "  " + "".join(f"{k:>16}" for k in keys)]  # fmt: skip
    lines += ["  " + "".join(f"{cell(r[k]):>16}" for k in keys) for r in rows]
    return "\n".join(lines)


def _parse_sweep(raw: str) -> tuple[str, list[str]]:
    parameter, _, values = raw.partition("=")
    if parameter not in SWEEPABLE or not values:
        raise click.BadParameter(
            f"expected one of {SWEEPABLE} = comma-separated values", param_hint="--sweep"
        )
    found = [v.strip() for v in values.split(",") if v.strip()]
    try:
        for v in found:
            valid = 1 <= int(v) <= 64 if parameter == "shards" else 0 <= float(v) <= 1
            if not valid:
                raise ValueError(v)
    except ValueError as e:
        raise click.BadParameter(f"{parameter}: {e} is out of range", param_hint="--sweep") from None
    return parameter, found


def _machine() -> dict[str, object]:
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown"
    )
    return {"host": platform.node(), "cpus": psutil.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "system": platform.platform()}  # fmt: skip


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


async def _versions(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        postgres = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    found = {"kafka": kafka_version(), "postgresql": postgres}
    return found | {p: version(p) for p in ("saga-ledger", "aiokafka", "asyncpg")}
