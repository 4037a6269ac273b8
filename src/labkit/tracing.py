"""Distributed tracing with OpenTelemetry, read back in the notebook: one trace from an
HTTP request through the API to its SQL statements and Redis commands, drawn as a
waterfall, with the N+1 pattern written on the request's own span.

:func:`start` makes a private ``TracerProvider`` whose spans go to an in-memory exporter
(:attr:`Tracing.exporter`; nothing leaves the process) and instruments:

- **SQL**, through SQLAlchemy's cursor events (:class:`SqlSpans`): one ``CLIENT`` span
  per statement sent, with ``db.system`` and ``db.statement`` (the SQL text with its
  placeholders; never the parameters, which may hold personal data). This is what an
  instrumentation library does inside; OpenTelemetry's own SQLAlchemy package refuses
  SQLAlchemy 2.1 at the time of writing, and writing the twenty lines shows how little
  magic there is;
- **Redis**, with ``opentelemetry-instrumentation-redis`` (every command a span);
- **HTTP clients** (httpx), with ``opentelemetry-instrumentation-httpx``, per client
  (:meth:`Tracing.instrument_client`).

An ASGI app is traced by :meth:`Tracing.wrap`: OpenTelemetry's ASGI middleware makes the
request's span, and :class:`StatementCounter` inside it counts the statements the request
sent and writes on that span ``app.db.statement_count``, ``app.db.max_repeats`` (how often
the most repeated statement text ran) and ``app.db.n_plus_one`` (true when that reaches the
threshold; ``app.``: the ``db.*`` names belong to OpenTelemetry's semantic conventions):
the N+1 becomes a span attribute an alert or a trace search can find.

>>> from opentelemetry import trace
>>> from sqlalchemy import text
>>> from labkit import db
>>> tracing = start()
>>> engine = db.engine()
>>> with tracing.tracer.start_as_current_span("report"):
...     with engine.connect() as conn:
...         for n in range(3):
...             _ = conn.execute(text("SELECT :n"), {"n": n}).all()
>>> [(s.name, s.attributes.get("db.statement")) for s in tracing.spans()][:2]
[('SELECT', 'SELECT %(n)s'), ('SELECT', 'SELECT %(n)s')]
>>> len(tracing.spans()), len(tracing.traces())
(4, 1)
>>> stop(tracing); engine.dispose()
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SqlSpans",
    "StatementCounter",
    "Tracing",
    "n_plus_one",
    "start",
    "stop",
    "waterfall",
]

_STATEMENTS: contextvars.ContextVar[Counter | None] = contextvars.ContextVar(
    "labkit_tracing_statements", default=None
)


class SqlSpans:
    """One span per statement any SQLAlchemy engine sends (sync, or async through its
    sync engine), while :meth:`attach` is in effect; also counts statements for
    :class:`StatementCounter`."""

    def __init__(self, tracer) -> None:
        self.tracer = tracer
        self._spans: dict[int, Any] = {}
        self._lock = threading.Lock()

    def attach(self) -> SqlSpans:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        event.listen(Engine, "handle_error", self._error)
        return self

    def detach(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, fn in (("before_cursor_execute", self._before),
                         ("after_cursor_execute", self._after), ("handle_error", self._error)):  # fmt: skip
            if event.contains(Engine, name, fn):
                event.remove(Engine, name, fn)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        from opentelemetry.trace import SpanKind

        words = statement.split(None, 1)
        span = self.tracer.start_span(
            words[0].upper() if words else "SQL",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": conn.dialect.name,
                "db.statement": statement,
                "db.name": str(conn.engine.url.database or ""),
            },
        )
        with self._lock:
            self._spans[id(context)] = span
        counter = _STATEMENTS.get()
        if counter is not None:
            counter[statement] += 1

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        with self._lock:
            span = self._spans.pop(id(context), None)
        if span is not None:
            span.end()

    def _error(self, exception_context) -> None:
        from opentelemetry.trace import Status, StatusCode

        with self._lock:
            span = self._spans.pop(id(exception_context.execution_context), None)
        if span is not None:
            span.record_exception(exception_context.original_exception)
            span.set_status(
                Status(StatusCode.ERROR, type(exception_context.original_exception).__name__)
            )
            span.end()


class StatementCounter:
    """ASGI middleware (inside the one that makes the request's span): counts the SQL
    statements of each request and writes them on the request's span."""

    def __init__(self, app, *, threshold: int = 5) -> None:
        self.app, self.threshold = app, threshold

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        from opentelemetry import trace

        span = trace.get_current_span()
        counter: Counter = Counter()
        token = _STATEMENTS.set(counter)

        def write() -> None:
            repeats = max(counter.values(), default=0)
            span.set_attribute("app.db.statement_count", sum(counter.values()))
            span.set_attribute("app.db.max_repeats", repeats)
            span.set_attribute("app.db.n_plus_one", repeats >= self.threshold)

        async def sending(message) -> None:
            # The outer middleware ends the span with the response: write before it starts
            # (a GraphQL response is computed whole before it is sent).
            if message["type"] in ("http.response.start", "websocket.close"):
                write()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _STATEMENTS.reset(token)


@dataclass
class Tracing:
    """What :func:`start` set up: the provider, its in-memory exporter, a tracer, and the
    instrumentation to undo in :func:`stop`."""

    provider: Any
    exporter: Any
    tracer: Any
    sql: SqlSpans
    redis: Any = None
    clients: list = field(default_factory=list)

    def spans(self) -> list:
        """Finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.exporter.clear()

    def traces(self) -> dict[int, list]:
        """Finished spans grouped by trace id, each trace sorted by start time."""
        found: dict[int, list] = {}
        for span in self.spans():
            found.setdefault(span.context.trace_id, []).append(span)
        return {key: sorted(spans, key=lambda s: s.start_time) for key, spans in found.items()}

    def wrap(self, app, *, threshold: int = 5):
        """``app`` traced: a span per request (OpenTelemetry's ASGI middleware, without its
        per-message spans) with :class:`StatementCounter`'s attributes."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            StatementCounter(app, threshold=threshold),
            tracer_provider=self.provider,
            exclude_spans=["receive", "send"],
        )

    def instrument_client(self, client) -> Any:
        """An httpx client (or Starlette's TestClient) whose requests become spans that
        carry the trace to the server."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
        self.clients.append(client)
        return client


_ACTIVE: list[Tracing] = []


def start(*, redis: bool = True) -> Tracing:
    """Trace SQL (every SQLAlchemy engine) and, with ``redis``, every Redis command, into
    a fresh in-memory exporter. Starting again stops the previous tracing first."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for previous in list(_ACTIVE):
        stop(previous)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("labkit.tracing")
    tracing = Tracing(provider, exporter, tracer, SqlSpans(tracer).attach())
    if redis:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        instrumentor = RedisInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider)
        tracing.redis = instrumentor
    _ACTIVE.append(tracing)
    return tracing


def stop(tracing: Tracing) -> None:
    """Undo :func:`start`'s instrumentation (the spans stay readable)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    tracing.sql.detach()
    if tracing.redis is not None and tracing.redis.is_instrumented_by_opentelemetry:
        tracing.redis.uninstrument()
    for client in tracing.clients:
        HTTPXClientInstrumentor.uninstrument_client(client)
    tracing.clients.clear()
    tracing.provider.shutdown()
    if tracing in _ACTIVE:
        _ACTIVE.remove(tracing)


def n_plus_one(spans, *, threshold: int = 5) -> list[tuple[str, str, int]]:
    """Statements (SQL, or Redis commands: their spans carry ``db.statement`` too)
    repeated at least ``threshold`` times under one parent span: (parent span's name,
    statement, times), most repeated first."""
    names = {span.context.span_id: span.name for span in spans}
    counts: Counter = Counter()
    for span in spans:
        statement = span.attributes.get("db.statement")
        if statement and span.parent is not None:
            counts[(names.get(span.parent.span_id, "?"), statement)] += 1
    return [(parent, statement, times) for (parent, statement), times in counts.most_common()
            if times >= threshold]  # fmt: skip


def waterfall(spans, *, ax=None, title: str = "one trace"):
    """Draw a trace as a waterfall (matplotlib): a bar per span from its start to its end,
    indented under its parent, SQL in one colour, Redis in another; returns the Axes."""
    import matplotlib.pyplot as plt

    spans = sorted(spans, key=lambda s: s.start_time)
    if not spans:
        raise ValueError("no spans to draw: run something while tracing first")
    by_id = {span.context.span_id: span for span in spans}

    def depth(span) -> int:
        level = 0
        while span.parent is not None and span.parent.span_id in by_id:
            span, level = by_id[span.parent.span_id], level + 1
        return level

    origin = spans[0].start_time
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.28 * len(spans) + 1.2))
    labels = []
    for row, span in enumerate(spans):
        attributes = span.attributes or {}
        colour = ("tab:red" if attributes.get("db.system") == "redis"
                  else "tab:blue" if "db.statement" in attributes else "tab:gray")  # fmt: skip
        start_ms = (span.start_time - origin) / 1e6
        width_ms = max((span.end_time - span.start_time) / 1e6, 0.01)
        ax.barh(row, width_ms, left=start_ms, color=colour, height=0.7)
        name = span.name if len(span.name) <= 40 else span.name[:39] + "…"
        labels.append("  " * depth(span) + name)
    ax.set_yticks(range(len(spans)), labels, fontsize=7, fontfamily="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("ms since the trace began")
    ax.set_title(title)
    return ax
