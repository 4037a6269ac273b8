"""Monitoring the data layer: Prometheus metrics fed by SQLAlchemy events, quantiles from
histogram buckets, an alert rule with pending / firing states, PostgreSQL's own statistics
as snapshots and deltas, and a dashboard plot.

>>> from prometheus_client import CollectorRegistry
>>> from labkit import db
>>> metrics = QueryMetrics(CollectorRegistry())      # a fresh registry for every run
>>> engine = db.engine()
>>> metrics.instrument(engine)
>>> with engine.connect() as conn:
...     _ = [conn.exec_driver_sql("SELECT 1").scalar() for _ in range(3)]
>>> metrics.count("SELECT")
3.0
>>> "db_queries_total{operation=\\"SELECT\\"} 3.0" in metrics.exposition()
True
>>> metrics.uninstrument(engine); engine.dispose()
>>> histogram_quantile(0.5, [(0.1, 10), (0.2, 30), (float("inf"), 30)])  # half of 30: in (0.1, 0.2]
0.125

**Quantiles from buckets.** A histogram keeps cumulative counts per upper bound (``le``).
:func:`histogram_quantile` estimates a quantile from them as Prometheus's function of the
same name does: find the bucket holding the rank, interpolate linearly inside it. Over a
window, the buckets are the difference of two snapshots (:func:`bucket_delta`), what
``rate(..._bucket[5m])`` gives Prometheus.

**The alert.** :class:`AlertRule` is the rule ``p95 > threshold`` with a ``for`` clause:
``inactive`` while the condition is false, ``pending`` while it has been true for fewer than
``for_ticks`` evaluations, then ``firing``; back to ``inactive`` as soon as it is false.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUCKETS",
    "AlertRule",
    "QueryMetrics",
    "bucket_delta",
    "counter_total",
    "histogram_buckets",
    "database_snapshot",
    "exact_quantile",
    "exposition",
    "histogram_quantile",
    "operation_of",
    "plot_dashboard",
    "STATEMENT_KEY",
    "bucket_of",
    "snapshot_delta",
    "statements_snapshot",
    "wait_for_counters",
    "watch",
]

#: Upper bounds (seconds) of the query-duration histogram: fine below 10 ms, coarser above.
#: A quantile estimated from buckets is off by at most the width of the bucket that holds it,
#: so the bounds bracket the durations one cares about (0.15 splits 0.1-0.25, where 100 ms
#: queries fall) and an alert threshold should sit on a bound (0.05 here): then "estimate >
#: threshold" is true exactly when "true quantile > threshold" is.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


def operation_of(statement: str) -> str:
    """The statement's first SQL word in upper case (``SELECT``, ``INSERT`` ...), the label
    that keeps the number of time series small (never the SQL text itself)."""
    words = statement.split(None, 1)
    return words[0].upper() if words else "EMPTY"


class QueryMetrics:
    """A query counter and a duration histogram on ``registry`` (a fresh
    ``CollectorRegistry`` per run: registering the same names twice raises), fed by
    ``before_cursor_execute`` / ``after_cursor_execute`` of the engines instrumented."""

    def __init__(
        self, registry: Any, *, buckets: Sequence[float] = BUCKETS, keep_raw: bool = False
    ) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = registry
        #: every duration observed, in seconds, if ``keep_raw`` (to check a quantile estimated
        #: from the buckets against the exact one; a real exporter keeps only the buckets)
        self.raw: list[float] | None = [] if keep_raw else None
        self.queries = Counter(
            "db_queries", "Statements executed, by operation.", ["operation"], registry=registry
        )
        self.duration = Histogram(
            "db_query_duration_seconds",
            "Statement duration (driver round trip), by operation.",
            ["operation"],
            buckets=buckets,
            registry=registry,
        )
        self._listeners: dict[int, tuple] = {}

    def instrument(self, engine: Any) -> None:
        """Count and time every statement ``engine`` executes."""
        from sqlalchemy import event

        key = "_labkit_metrics_t0"

        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info.setdefault(key, []).append(time.perf_counter())

        def after(conn, cursor, statement, parameters, context, executemany):
            elapsed = time.perf_counter() - conn.info[key].pop()
            operation = operation_of(statement)
            self.queries.labels(operation).inc()
            self.duration.labels(operation).observe(elapsed)
            if self.raw is not None:
                self.raw.append(elapsed)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        self._listeners[id(engine)] = (before, after)

    def uninstrument(self, engine: Any) -> None:
        """Remove the listeners :meth:`instrument` added."""
        from sqlalchemy import event

        before, after = self._listeners.pop(id(engine))
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)

    def count(self, operation: str | None = None) -> float:
        """Statements counted (of one operation, or all)."""
        return counter_total(self.registry, "db_queries", operation=operation)

    def buckets(self) -> list[tuple[float, float]]:
        """The duration histogram's cumulative buckets, summed over operations."""
        return histogram_buckets(self.registry, "db_query_duration_seconds")

    def exposition(self) -> str:
        """The registry in Prometheus's text format (what ``/metrics`` would serve)."""
        return exposition(self.registry)


def exposition(registry: Any) -> str:
    """``registry`` in Prometheus's text format (what a ``/metrics`` endpoint serves)."""
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def counter_total(registry: Any, name: str, **labels: str | None) -> float:
    """The value of counter ``name`` on ``registry``, summed over the series whose labels
    match ``labels`` (a label given as None matches any value)."""
    wanted = {k: v for k, v in labels.items() if v is not None}
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_total" and all(
                sample.labels.get(k) == v for k, v in wanted.items()
            ):
                total += sample.value
    return total


def histogram_buckets(registry: Any, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets ``[(le, count)]`` of histogram ``name`` on ``registry``, summed
    over its series (what ``sum by (le)`` gives in PromQL)."""
    sums: dict[float, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                sums[le] = sums.get(le, 0.0) + sample.value
    return sorted(sums.items())


def bucket_delta(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The cumulative buckets of the observations made between two snapshots."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile (0..1) estimated from cumulative buckets ``[(le, count)]`` ending
    with ``+Inf``, as Prometheus does: linear interpolation inside the bucket that holds the
    rank ``q * total``; the first bucket starts at 0; a rank in the ``+Inf`` bucket gives the
    highest finite bound. ``nan`` when there is no observation."""
    if not 0 <= q <= 1:
        raise ValueError(f"q is a fraction between 0 and 1, not {q}")
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        raise ValueError("the buckets must end with the +Inf bucket (le=float('inf'))")
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return ordered[-2][0] if len(ordered) > 1 else math.nan


def exact_quantile(q: float, values: Sequence[float]) -> float:
    """The ``q`` quantile of raw ``values`` by nearest rank (the ``ceil(q * n)``-th smallest),
    what :func:`histogram_quantile` estimates from buckets; ``nan`` without values. It lies in
    the same bucket as the estimate, so the two differ by less than that bucket's width."""
    if not 0 <= q <= 1:
        raise ValueError(f"q is a fraction between 0 and 1, not {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def bucket_of(value: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The histogram bucket ``(lower, le]`` that holds ``value`` (bounds sorted ascending;
    ``(last bound, inf]`` above them)."""
    lower = 0.0
    for le in sorted(bounds):
        if value <= le:
            return (lower, le)
        lower = le
    return (lower, math.inf)


@dataclass
class AlertRule:
    """``value > threshold`` for ``for_ticks`` evaluations in a row → firing.

    :meth:`evaluate` takes the latest value (e.g. the p95 over the window) and returns the
    state: ``inactive``, ``pending`` or ``firing``; ``history`` keeps every state.
    ``for_ticks=2`` is Prometheus's ``for:`` of one evaluation interval: pending at the first
    evaluation above the threshold, firing at the second; ``for_ticks=1`` is no ``for:``."""

    name: str
    threshold: float
    for_ticks: int = 1
    active_for: int = 0
    history: list[str] = field(default_factory=list)

    def evaluate(self, value: float) -> str:
        if not math.isnan(value) and value > self.threshold:
            self.active_for += 1
            state = "firing" if self.active_for >= self.for_ticks else "pending"
        else:
            self.active_for = 0
            state = "inactive"
        self.history.append(state)
        return state


# --------------------------------------------------------------------------- PostgreSQL


#: pg_stat_statements keeps one row per (userid, dbid, queryid, toplevel): the same statement
#: run by two roles is two rows with one queryid. A snapshot holds one database's rows.
STATEMENT_KEY = ["userid", "queryid", "toplevel"]


def statements_snapshot(database: Any):
    """``pg_stat_statements`` rows of ``database`` (its own dbid only): userid, role,
    queryid, toplevel, query, calls, total_ms, rows — a pandas DataFrame."""
    import pandas as pd

    with database.connect(autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.userid, r.rolname, s.queryid, s.toplevel, s.query, s.calls, "
            "s.total_exec_time, s.rows FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid "
            "LEFT JOIN pg_roles r ON r.oid = s.userid WHERE d.datname = current_database()"
        ).fetchall()
    return pd.DataFrame(
        rows,
        columns=["userid", "role", "queryid", "toplevel", "query", "calls", "total_ms", "rows"],
    )


def snapshot_delta(before, after, *, top: int = 10, roles: bool = False):
    """What happened between two :func:`statements_snapshot` frames: calls, total_ms, rows
    and mean_ms per statement row (matched on userid, queryid and toplevel, the view's own
    key), the statements that took the most time first; ``roles=True`` adds the role
    column. The snapshots' own queries (on ``pg_stat_*``) are left out."""
    import pandas as pd

    merged = after.merge(
        before[[*STATEMENT_KEY, "calls", "total_ms", "rows"]],
        on=STATEMENT_KEY,
        how="left",
        suffixes=("", "_before"),
        validate="one_to_one",
    ).fillna({"calls_before": 0, "total_ms_before": 0.0, "rows_before": 0})
    frame = pd.DataFrame(
        {
            "query": merged["query"].map(lambda q: " ".join(str(q).split())[:70]),
            "calls": (merged["calls"] - merged["calls_before"]).astype(int),
            "total_ms": (merged["total_ms"] - merged["total_ms_before"]).round(2),
            "rows": (merged["rows"] - merged["rows_before"]).astype(int),
        }
    )
    if roles:
        frame.insert(0, "role", merged["role"])
    own = merged["query"].astype(str).str.contains("pg_stat_", regex=False)
    frame = frame[(frame["calls"] > 0) & ~own]
    frame["mean_ms"] = (frame["total_ms"] / frame["calls"]).round(3)
    return frame.sort_values("total_ms", ascending=False, ignore_index=True).head(top)


DATABASE_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)


def database_snapshot(database: Any) -> dict[str, int]:
    """The counters of ``database`` in ``pg_stat_database`` (after flushing this session's
    pending statistics, so that a snapshot sees everything finished before it)."""
    from psycopg import sql

    columns = sql.SQL(", ").join(sql.Identifier(c) for c in DATABASE_COUNTERS)
    with database.connect(autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            sql.SQL("SELECT {} FROM pg_stat_database WHERE datname = current_database()").format(
                columns
            )
        ).fetchone()
    return dict(zip(DATABASE_COUNTERS, (int(v) for v in row), strict=True))


def wait_for_counters(database: Any, minimum: dict[str, int], *, timeout: float = 5.0):
    """:func:`database_snapshot`, repeated until every counter in ``minimum`` has reached its
    value (other sessions flush their statistics within about a second) or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        snap = database_snapshot(database)
        if all(snap[k] >= v for k, v in minimum.items()) or time.monotonic() > deadline:
            return snap
        time.sleep(0.1)


# --------------------------------------------------------------------------- dashboard


def watch(
    registry: Any,
    rule: AlertRule,
    workload: Callable[[int], Any],
    *,
    ticks: int,
    window: int,
    quantile: float = 0.95,
    counter: str = "db_queries",
    histogram: str = "db_query_duration_seconds",
    raw: Sequence[float] | None = None,
    progress: bool = True,
):
    """Run ``workload(tick)`` for each tick, scrape ``histogram`` on ``registry`` after each
    one, and evaluate ``rule`` on the ``quantile`` of the last ``window`` ticks'
    observations. Returns a DataFrame: tick, queries, qps, p95_ms (the estimate from the
    buckets), state. ``raw``, a list the instrumentation appends every duration to (seconds),
    adds exact_p95_ms (the same window's quantile of the raw durations) and bucket_ms (the
    bucket holding both)."""
    import pandas as pd
    from tqdm import tqdm  # plain text on stdout: saved with the notebook, unlike a widget

    if window < 1:
        raise ValueError(f"window is a number of ticks, at least 1, not {window}")
    scrapes = [histogram_buckets(registry, histogram)]
    marks = [len(raw) if raw is not None else 0]
    rows = []
    for tick in tqdm(range(ticks), desc="ticks", file=sys.stdout, disable=not progress):
        counted = counter_total(registry, counter)
        started = time.perf_counter()
        workload(tick)
        elapsed = time.perf_counter() - started
        scrapes.append(histogram_buckets(registry, histogram))
        start = max(0, tick + 1 - window)
        window_buckets = bucket_delta(scrapes[start], scrapes[-1])
        value = histogram_quantile(quantile, window_buckets)
        queries = int(counter_total(registry, counter) - counted)
        row = {
            "tick": tick,
            "queries": queries,
            "qps": round(queries / elapsed, 1) if elapsed else float("nan"),
            "p95_ms": round(value * 1000, 2),
        }
        if raw is not None:
            marks.append(len(raw))
            exact = exact_quantile(quantile, raw[marks[start] : marks[-1]])
            lower, upper = bucket_of(exact, [le for le, _ in window_buckets if not math.isinf(le)])
            row["exact_p95_ms"] = round(exact * 1000, 2)
            row["bucket_ms"] = f"{lower * 1000:g}-{upper * 1000:g}"
        row["state"] = rule.evaluate(value)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_dashboard(frame, *, threshold_ms: float, title: str = "Data-layer dashboard"):
    """Queries/s, p95 (ms, with the alert threshold) and the alert state per tick: ``frame``
    has columns tick, qps, p95_ms, state (and exact_p95_ms, drawn beside, if present)."""
    import matplotlib.pyplot as plt

    levels = {"inactive": 0, "pending": 1, "firing": 2}
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    axes[0].plot(frame["tick"], frame["qps"], marker=".", color="#4c72b0")
    axes[0].set_ylabel("queries/s")
    axes[1].plot(
        frame["tick"], frame["p95_ms"], marker=".", color="#dd8452", label="p95 from buckets"
    )
    if "exact_p95_ms" in frame:
        axes[1].plot(
            frame["tick"],
            frame["exact_p95_ms"],
            marker="x",
            linestyle=":",
            color="#55a868",
            label="p95 of raw durations",
        )
    axes[1].axhline(threshold_ms, color="#c44e52", linestyle="--", label="threshold")
    axes[1].set_ylabel("p95 ms (window)")
    axes[1].legend(loc="upper right")
    axes[2].step(frame["tick"], [levels[s] for s in frame["state"]], where="mid", color="#c44e52")
    axes[2].set_yticks([0, 1, 2], ["inactive", "pending", "firing"])
    axes[2].set_xlabel("tick (one scrape)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
