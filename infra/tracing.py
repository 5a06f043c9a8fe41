"""OpenTelemetry: one transfer is one trace, carried across Kafka as W3C trace context.

`setup_tracing` runs at an entry point and picks the exporter from the standard OTEL_* variables:
OTEL_TRACES_EXPORTER=none (the default: spans are not recorded, context still propagates),
`console`, or `otlp` when opentelemetry-exporter-otlp is installed. Everything else here is the
small amount of glue the coordinator and shards share: headers in, headers out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas.errors import ConfigurationError

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()


def setup_tracing(service_name: str, env: Mapping[str, str]) -> None:
    """Install a recording tracer provider if OTEL_TRACES_EXPORTER asks for an exporter."""
    choice = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if choice in ("", "none"):
        return
    exporter: SpanExporter
    if choice == "console":
        exporter = ConsoleSpanExporter()
    elif choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )
        except ImportError:
            raise ConfigurationError(
                "OTEL_TRACES_EXPORTER=otlp needs `pip install opentelemetry-exporter-otlp-proto-http`"
            ) from None
        exporter = OTLPSpanExporter()
    else:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={choice!r}: use none, console or otlp")
    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def context_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context | None:
    """The trace context a Kafka message carries, or None if it carries none."""
    for key, value in headers or ():
        if key == TRACEPARENT:
            return _PROPAGATOR.extract({TRACEPARENT: value.decode(errors="replace")})
    return None


def context_from_traceparent(traceparent: str | None) -> Context | None:
    return _PROPAGATOR.extract({TRACEPARENT: traceparent}) if traceparent else None


def current_headers() -> dict[str, str]:
    """The current span's context as message headers (empty when there is no valid span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context.get_current())
    return carrier


def child_span_headers(name: str, parent: Context, attributes: Mapping[str, str | int]) -> dict[str, str]:
    """Record a span under `parent` (work already done) and return its context as headers."""
    span = trace.get_tracer("ledger").start_span(name, context=parent, attributes=dict(attributes))
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    span.end()
    return carrier
