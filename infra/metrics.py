"""OpenTelemetry metrics on a Prometheus `/metrics` endpoint, for people and their dashboards.

An entry point decides whether a process serves metrics (`--metrics-port`, LEDGER_METRICS_PORT,
or the standard OTEL_EXPORTER_PROMETHEUS_PORT) and calls `setup_metrics` once; everything else
asks `opentelemetry.metrics.get_meter` like any library. With metrics off (the default, so tests
and several processes on one machine never fight over a port) the global meter is the API's
no-op one and an instrument costs next to nothing.

The exporter registers with prometheus_client, whose HTTP server answers on a daemon thread: a
scrape never waits for the event loop, and observable instruments' callbacks run on that thread,
so they only read numbers the loop keeps (an int or a dict read is atomic under the GIL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from schemas.errors import ConfigurationError

DEFAULT_HOST: Final = "localhost"
"""The OpenTelemetry default: a container sets OTEL_EXPORTER_PROMETHEUS_HOST=0.0.0.0."""
LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Bucket bounds of every duration histogram, in seconds: a calm batch takes a few ms, a stalled
one is cut at 30 s. The SDK's defaults (0 to 10000) suit milliseconds, not seconds."""

METRICS_PORT_HELP: Final = (
    "Serve OpenTelemetry metrics for Prometheus on http://HOST:PORT/metrics (HOST: "
    "OTEL_EXPORTER_PROMETHEUS_HOST, default localhost; OTEL_EXPORTER_PROMETHEUS_PORT also sets the "
    "port). Default: off. [env: LEDGER_METRICS_PORT]"
)


@dataclass(frozen=True)
class MetricsEndpoint:
    port: int
    """TCP port of the `/metrics` endpoint (0: any free port, for tests)."""
    host: str = DEFAULT_HOST
    """Address it listens on."""


def metrics_endpoint(port: int | None, env: Mapping[str, str]) -> MetricsEndpoint | None:
    """Where to serve metrics: `port` (the option, or LEDGER_METRICS_PORT through click), else the
    standard OTEL_EXPORTER_PROMETHEUS_PORT; None (off) when neither is set."""
    host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or DEFAULT_HOST
    if port is not None:
        return MetricsEndpoint(port, host)
    raw = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigurationError(f"OTEL_EXPORTER_PROMETHEUS_PORT={raw!r}: a TCP port, 0 to 65535")
    return MetricsEndpoint(int(raw), host)


@dataclass(frozen=True)
class ServingMetrics:
    provider: MeterProvider
    port: int
    """The port actually bound (the one asked for, or the free one picked for 0)."""


def setup_metrics(
    service_name: str, endpoint: MetricsEndpoint | None, env: Mapping[str, str]
) -> ServingMetrics | None:
    """Install a meter provider exporting to Prometheus and serve `/metrics` at `endpoint` (None:
    metrics off, nothing installed). Call once, at an entry point, before anything is metered."""
    if endpoint is None:
        return None
    # Imported here: a process that serves no metrics never loads prometheus_client.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    try:
        server, _thread = start_http_server(endpoint.port, endpoint.host)
    except OSError as e:
        raise ConfigurationError(f"metrics endpoint {endpoint.host}:{endpoint.port}: {e}") from e
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()],
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)}),
    )
    metrics.set_meter_provider(provider)
    return ServingMetrics(provider, int(server.server_port))


KNOWN_LABEL_OTHER: Final = "other"


def capped(value: str | None, known: frozenset[str]) -> str:
    """A label value from a known set, `none` for no value, `other` for anything else: a label's
    values stay few whatever a message carries (each value is a series Prometheus keeps)."""
    if value is None:
        return "none"
    return value if value in known else KNOWN_LABEL_OTHER
