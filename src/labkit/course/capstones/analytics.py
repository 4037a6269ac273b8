"""Capstone: an analytics dashboard on time-series data: the acceptance suite.

``python -m labkit check capstone-analytics [DIR] --size ci|default [--only CHECK]``

The suite loads the learner's event stream into a database of its own, then drives the
learner's package (``capstones/analytics``) through its public functions, each given an
open psycopg connection in autocommit mode whose session time zone is ``Asia/Kolkata``
(UTC+05:30): code that buckets by the session's zone instead of UTC shows up at once.

What is asserted is deterministic (rows equal to a recomputation, statements per row loaded,
rows written per event ingested, scans of the raw table, column types of the exports);
times are measured and shown beside, and held to thresholds only at the default size.

The checks, each with the brief's requirement it proves (``--only`` takes the name)::

    >>> [(check.requirement, check.check_name) for check in CHECKS]  # doctest: +NORMALIZE_WHITESPACE
    [('R1', 'load-copy'), ('R2', 'rollup-matches-recompute'), ('R2', 'rollup-incremental'), ('R3', 'dashboard-reads-rollup'), ('R4', 'duckdb-matches-postgres'), ('R5', 'export-roundtrip'), ('R6', 'real-data-timezones'), ('R7', 'dashboard-widget')]
    >>> sorted(PARAMS)
    ['ci', 'default']
"""

from __future__ import annotations

import csv
import math
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from labkit.course.capstones import Check, requirement

TITLE = "Analytics dashboard on time-series data"

SEED = 14
SESSION_TIME_ZONE = "Asia/Kolkata"
SECOND_TIME_ZONE = "America/St_Johns"
DATASET = "seattle-temps.csv"
#: The Seattle file's clock: UTC-8 all year, no daylight saving (see data/README.md).
DATASET_OFFSET = timedelta(hours=-8)

PARAMS = {
    # CI: every deterministic check at full strength; times are reported, not held.
    "ci": {
        "events": 200_000,
        "min_rows_per_statement": 50_000,
        "dashboard_ms": None,
        "min_duckdb_speedup": None,
        "repeat": 3,
        "ingest_batch": 200,
    },
    # What a learner runs: 10 million events; the dashboard must answer in 250 ms and DuckDB
    # must beat PostgreSQL on the analytical queries.
    "default": {
        "events": 10_000_000,
        "min_rows_per_statement": 50_000,
        "dashboard_ms": 250.0,
        "min_duckdb_speedup": 2.0,
        "repeat": 3,
        "ingest_batch": 200,
    },
}

#: The analytical queries the brief defines, as PostgreSQL computes them (the expected rows).
EXPECTED_SQL = {
    "daily_summary": """
        SELECT (occurred_at AT TIME ZONE 'UTC')::date, kind, count(*), count(DISTINCT user_id),
               coalesce(sum(amount_cents), 0)
        FROM events GROUP BY 1, 2 ORDER BY 1, 2""",
    "hourly_purchases": """
        WITH bought AS (
            SELECT date_bin('1 hour', occurred_at, timestamptz '2000-01-01 00:00:00+00') AS hour,
                   count(*) AS n, sum(amount_cents) AS cents
            FROM events WHERE kind = 'purchase' GROUP BY 1
        ), span AS (
            SELECT date_bin('1 hour', min(occurred_at), timestamptz '2000-01-01 00:00:00+00') AS a,
                   date_bin('1 hour', max(occurred_at), timestamptz '2000-01-01 00:00:00+00') AS b
            FROM events
        )
        SELECT h, coalesce(bought.n, 0), coalesce(bought.cents, 0)
        FROM span, generate_series(span.a, span.b, interval '1 hour') AS h
        LEFT JOIN bought ON bought.hour = h ORDER BY 1""",
    "top_buyers": """
        SELECT user_id, count(*), sum(amount_cents) FROM events WHERE kind = 'purchase'
        GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 10""",
}

_RECOMPUTE = """
SELECT date_bin(%(step)s::interval, occurred_at, timestamptz '2000-01-01 00:00:00+00'), kind,
       count(*), coalesce(sum(amount_cents), 0)
FROM events
WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
  AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
GROUP BY 1, 2"""

_FINGERPRINT_PG = """
SELECT count(*), sum(event_id), sum(user_id), count(amount_cents), sum(amount_cents),
       sum((extract(epoch FROM occurred_at) * 1000000)::bigint - 1709251200000000),
       count(DISTINCT kind)
FROM {}"""
_FINGERPRINT_DUCK = """
SELECT count(*), sum(event_id), sum(user_id), count(amount_cents), sum(amount_cents),
       sum(epoch_us(occurred_at) - 1709251200000000), count(DISTINCT kind)
FROM read_parquet(?)"""
_BASE_US = 1_709_251_200_000_000  # 2024-03-01 00:00 UTC: instants are summed from here
FINGERPRINT = (
    "rows, sum of ids, sum of users, amounts not NULL, sum of amounts, sum of instants, kinds"
)

EXPECTED_TYPES = {
    "event_id": "int64",
    "occurred_at": "timestamp with a time zone",
    "kind": "string",
    "user_id": "int32",
    "amount_cents": "int32",
}
_ROLLUP_EXCLUDED = ("events", "temperatures", "events_roundtrip", "export_probe", "probe_back")
RELOAD_TIME_ZONE = "America/Los_Angeles"

#: A table the suite exports with the learner's functions: text that CSV must quote, NULL
#: next to the empty string, an instant near midnight UTC.
PROBE_ROWS = [
    (1, None, datetime(2024, 3, 1, 23, 30, tzinfo=UTC), None),
    (2, "", datetime(2024, 3, 2, 0, 30, tzinfo=UTC), 0),
    (3, "a, b", datetime(2024, 3, 2, 1, 30, tzinfo=UTC), -5),
    (4, 'say "hi"', datetime(2024, 3, 2, 2, 30, tzinfo=UTC), 7),
    (5, "two\nlines", datetime(2024, 3, 2, 3, 30, tzinfo=UTC), None),
    (6, "NULL", datetime(2024, 3, 2, 4, 30, tzinfo=UTC), 9),
]


# --------------------------------------------------------------------------- shared state


def _state(ctx) -> dict:
    if not hasattr(ctx, "_analytics"):
        ctx._analytics = {}
    return ctx._analytics


def _connect(database):
    """A connection like the ones the learner's functions get: autocommit, Kolkata time."""
    return database.connect(autocommit=True, options=f"-c TimeZone={SESSION_TIME_ZONE}")


def _database(ctx):
    state = _state(ctx)
    if "db" not in state:
        state["db"] = ctx.database("events")
        conn = _connect(state["db"])
        ctx.on_close(conn.close)
        state["conn"] = conn  # the learner's connection
        admin = state["db"].connect(autocommit=True)
        ctx.on_close(admin.close)
        state["admin"] = admin  # the suite's own (UTC is never assumed: queries say UTC)
        conn2 = state["db"].connect(autocommit=True, options=f"-c TimeZone={SECOND_TIME_ZONE}")
        ctx.on_close(conn2.close)
        state["conn2"] = conn2  # the learner's second session (another zone)
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return state


def _loaded(ctx) -> dict:
    """The learner's ``load_events`` run once per suite run, measured."""
    state = _database(ctx)
    if "load" not in state:
        admin, n = state["admin"], ctx.params["events"]
        dbid = admin.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
        admin.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (dbid,))
        import numpy  # noqa: F401  (imported before the clock starts: not the load's cost)
        import pyarrow.csv  # noqa: F401

        started = time.perf_counter()
        ctx.project.load_events(state["conn"], n, seed=SEED, progress=False)
        seconds = time.perf_counter() - started
        calls, rows = admin.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0) FROM pg_stat_statements"
            " WHERE dbid = %s AND rows > 0 AND query ~* '\\m(insert|copy)\\M'",
            (dbid,),
        ).fetchone()
        state["load"] = {"seconds": seconds, "write_statements": int(calls), "rows": int(rows)}
    return state


def _rolled_up(ctx) -> dict:
    state = _loaded(ctx)
    if "rollup" not in state:
        ctx.project.setup_rollup(state["conn"])
        state["rollup"] = True
        state["next_id"] = (
            state["admin"].execute("SELECT max(event_id) + 1 FROM events").fetchone()[0]
        )
    return state


def _new_ids(state: dict, count: int) -> list[int]:
    first = state["next_id"]
    state["next_id"] += count
    return list(range(first, first + count))


def _event(event_id: int, at: datetime, i: int) -> tuple:
    kind = ("view", "click", "signup", "purchase")[i % 4]
    amount = 100 + (event_id * 7919) % 20_000 if kind == "purchase" else None
    return (event_id, at, kind, 1 + event_id % 5_000, amount)


def _span(admin) -> tuple[datetime, datetime]:
    first, last = admin.execute(
        "SELECT date_bin('1 minute', min(occurred_at), timestamptz '2000-01-01+00'),"
        "       date_bin('1 minute', max(occurred_at), timestamptz '2000-01-01+00')"
        "         + interval '1 minute' FROM events"
    ).fetchone()
    return first, last


def _as_key(value):
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return ("naive timestamp", value.isoformat())
        return value.astimezone(UTC)
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        return _as_key(value.to_pydatetime())
    if isinstance(value, date):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal) or hasattr(value, "item"):
        number = float(value)
        return None if math.isnan(number) else round(number, 4)
    return value


def _normal(rows) -> list[tuple]:
    return [tuple(_as_key(v) for v in row) for row in rows]


def _buckets(rows) -> dict:
    """``{(bucket, kind): (events, amount)}`` from rows of (bucket, kind, events, amount)."""
    out: dict = {}
    for row in _normal(rows):
        if len(row) != 4:
            raise ValueError(
                f"dashboard_data must return (bucket, kind, events, amount_cents) rows, got {row!r}"
            )
        out[(row[0], row[1])] = (row[2], row[3])
    return out


def _differences(got: dict, want: dict) -> list[str]:
    keys = sorted(set(got) | set(want), key=str)
    return [
        f"{k}: got {got.get(k)}, expected {want.get(k)}" for k in keys if got.get(k) != want.get(k)
    ]


def _recompute(admin, start, end, *, bucket="1 minute", kinds=None) -> dict:
    params = {"step": bucket, "start": start, "end": end, "kinds": kinds}
    return _buckets(admin.execute(_RECOMPUTE, params).fetchall())


def _flush(conn) -> None:
    """Make the learner's session report its table statistics now (PostgreSQL 15+ batches
    them); the report is sent before the server answers, so the next read sees it."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def _table_stats(admin) -> dict:
    """The table counters, as of now. The suite's own statistics are flushed first: its
    queries (the recomputations) must not be counted as the learner's scans later."""
    admin.execute("SELECT pg_stat_force_next_flush()")
    admin.execute("SELECT pg_stat_clear_snapshot()")
    rows = admin.execute(
        "SELECT relname, seq_scan, coalesce(idx_scan, 0), seq_tup_read,"
        "       coalesce(idx_tup_fetch, 0), n_tup_ins + n_tup_upd + n_tup_del"
        " FROM pg_stat_user_tables WHERE schemaname = 'public'"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _delta(before: dict, after: dict) -> dict:
    zero = (0, 0, 0, 0, 0)
    return {
        name: tuple(a - b for a, b in zip(after[name], before.get(name, zero), strict=True))
        for name in after
    }


def _fail_text(items: list[str], limit: int = 3) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- the checks


@requirement("R1", "load-copy")
def check_load(ctx) -> Check:
    state = _loaded(ctx)
    n, load, admin = ctx.params["events"], state["load"], state["admin"]
    import pyarrow.compute as pc

    got = tuple(admin.execute(_FINGERPRINT_PG.format("events")).fetchone())
    want = [0, 0, 0, 0, 0, 0, set()]
    for table in ctx.project.event_batches(n, seed=SEED):
        want[0] += table.num_rows
        want[1] += pc.sum(table["event_id"]).as_py() or 0
        want[2] += pc.sum(table["user_id"]).as_py() or 0
        want[3] += pc.count(table["amount_cents"]).as_py()
        want[4] += pc.sum(table["amount_cents"]).as_py() or 0
        micros = pc.subtract(table["occurred_at"].cast("int64"), _BASE_US)  # no overflow
        want[5] += pc.sum(micros).as_py() or 0
        want[6] |= set(pc.unique(table["kind"]).to_pylist())
    want[6] = len(want[6])
    same = [int(g or 0) for g in got] == [int(w) for w in want]
    statements = max(1, load["write_statements"])
    per_statement = got[0] / statements
    rate = got[0] / load["seconds"] if load["seconds"] else float("inf")
    passed = same and per_statement >= ctx.params["min_rows_per_statement"]
    fix = ""
    if not same:
        fix = (f"events holds other rows than event_batches({n}) generates "
               f"({FINGERPRINT}: got {got}, expected {tuple(want)}): load every row once")  # fmt: skip
    elif not passed:
        fix = ("load with COPY: `with conn.cursor().copy('COPY events FROM STDIN ...') as copy:` "
               "and write every block into that one COPY (one statement, one commit for the "
               "whole load), not one INSERT per row nor one COPY per small block")  # fmt: skip
    return Check(
        "load-copy",
        "R1",
        passed,
        measured=(
            f"{got[0]:,} rows loaded in {load['seconds']:.1f} s ({rate:,.0f} rows/s) with "
            f"{load['write_statements']:,} writing statements: {per_statement:,.0f} rows "
            f"per statement; rows {'equal' if same else 'differ from'} the generator's"
        ),  # fmt: skip
        threshold=f"rows equal to event_batches({n:,}); >= {ctx.params['min_rows_per_statement']:,} rows per statement",
        fix=fix,
        numbers={
            "load_rows_per_s": round(rate),
            "load_seconds": round(load["seconds"], 2),
            "load_rows_per_statement": round(per_statement),
        },  # fmt: skip
    )


def _second_connection(state: dict):
    """Another learner connection, in a zone with a half-hour offset (UTC-03:30 or -02:30):
    a rollup that stores the session's wall-clock time instead of an instant shows it."""
    return state["conn2"]


def _through_dashboard(state: dict, project, start, end) -> tuple[dict | None, int]:
    """The rollup's minutes as the learner's ``dashboard_data`` reports them, and how many
    times it scanned ``events`` meanwhile. ``None`` when it read the raw events: then the
    answer says nothing about the rollup."""
    conn, admin = state["conn"], state["admin"]
    _flush(conn)
    before = _table_stats(admin)
    rows = project.dashboard_data(conn, start, end, bucket="minute")
    _flush(conn)
    raw = _delta(before, _table_stats(admin)).get("events", (0, 0, 0, 0, 0))
    scans = raw[0] + raw[1]
    return (None if scans else _buckets(rows)), scans


_READS_EVENTS = (
    "cannot verify the rollup: dashboard_data reads events ({} scans), so its answer is the "
    "raw events', not the rollup's. Make dashboard_data read your rollup (R3) to check R2"
)


_HOLD_LOCK = 71_400_014  # the advisory lock that holds the racing ingests' commits


def _ingest_together(state: dict, project, rows: list[tuple]) -> list:
    """The same batch ingested by two connections at once (a retried delivery racing the
    first): what each call returned, or the exception it raised (re-raised after both end).

    The two really overlap, whatever the machine's load: while the suite holds an advisory
    lock, a deferred constraint trigger on ``events`` makes every commit that inserted into
    it wait for that lock, so neither session's rows are committed before the other has
    written (or is waiting on the first's rows); then the suite lets both go."""
    from psycopg import sql

    conns = [state["conn"], _second_connection(state)]
    admin = state["admin"]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def one(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[k] = project.ingest(conns[k], list(rows))
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the suite's thread)
            results[k] = exc

    admin.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION capstone_hold_commit() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared({}); RETURN NULL; END $$"
        ).format(sql.Literal(_HOLD_LOCK))
    )
    admin.execute(
        "CREATE CONSTRAINT TRIGGER capstone_hold_commit AFTER INSERT ON events "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION capstone_hold_commit()"
    )
    admin.execute("SELECT pg_advisory_lock(%s)", (_HOLD_LOCK,))
    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(2)]
    try:
        for thread in threads:
            thread.start()
        pids = [c.info.backend_pid for c in conns]
        deadline = time.monotonic() + 5  # a design that never writes twice never waits twice
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            waiting = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) "
                "AND wait_event_type = 'Lock'",
                (pids,),
            ).fetchone()[0]
            if waiting == 2:
                break
            time.sleep(0.01)
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s)", (_HOLD_LOCK,))
        for thread in threads:
            thread.join(timeout=120)
        admin.execute("DROP TRIGGER IF EXISTS capstone_hold_commit ON events")
        admin.execute("DROP FUNCTION IF EXISTS capstone_hold_commit()")
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@requirement("R2", "rollup-matches-recompute")
def check_rollup(ctx) -> Check:
    state = _rolled_up(ctx)
    conn, admin, project = state["conn"], state["admin"], ctx.project
    first, last = _span(admin)
    before = admin.execute("SELECT count(*) FROM events").fetchone()[0]
    fresh = [
        _event(i, last + timedelta(seconds=k * 0.9), k) for k, i in enumerate(_new_ids(state, 300))
    ]
    late = [
        _event(i, first + timedelta(seconds=30 + k * 7), k)
        for k, i in enumerate(_new_ids(state, 200))
    ]
    middle = first + (last - first) / 2
    refunds = [(i, middle + timedelta(seconds=k * 11), "refund", 7, -(500 + k)) for k, i in enumerate(_new_ids(state, 20))]  # fmt: skip
    raced = [
        _event(i, middle + timedelta(minutes=3, seconds=k * 2), k)
        for k, i in enumerate(_new_ids(state, 150))
    ]
    stored_before = [
        tuple(r) for r in admin.execute("SELECT * FROM events ORDER BY event_id LIMIT 50")
    ]
    redelivered = fresh[:100] + stored_before + refunds + refunds  # twice in one batch, too
    rng = random.Random(SEED)
    reported = {
        "new events, out of order": project.ingest(conn, list(reversed(fresh))),
        f"late events (older minutes), from a session in {SECOND_TIME_ZONE}": project.ingest(
            _second_connection(state), late
        ),
        "re-delivered events and duplicates within a batch": project.ingest(
            conn, rng.sample(redelivered, len(redelivered))
        ),
    }
    raced_said = _ingest_together(state, project, raced)
    reported["one batch ingested by two sessions at once"] = sum(int(v or 0) for v in raced_said)
    expected_new = len(fresh) + len(late) + len(refunds) + len(raced)
    stored = admin.execute("SELECT count(*) FROM events").fetchone()[0] - before
    start, end = _span(admin)
    want = _recompute(admin, start, end)
    got, scans = _through_dashboard(state, project, start, end)
    wrong = _differences(got, want) if got is not None else []
    said = sum(int(v or 0) for v in reported.values())
    passed = got is not None and not wrong and stored == expected_new and said == expected_new
    fix = ""
    if got is None:
        fix = _READS_EVENTS.format(scans)
    elif wrong:
        fix = (f"the rollup disagrees with the events in {len(wrong)} (minute, kind) buckets, e.g. "
               f"{_fail_text(wrong, 2)}. Count only events that were newly stored (INSERT ... ON "
               "CONFLICT DO NOTHING RETURNING), add late events to their own minute, keep minutes "
               "as instants (timestamptz), and fill the rollup from the events already stored "
               "when it starts")  # fmt: skip
    elif stored != expected_new:
        fix = f"events gained {stored} rows for {expected_new} distinct new events: store each event once, even when two sessions deliver it at the same time"
    elif said != expected_new:
        fix = f"ingest returned {reported} ({said} in all): return how many events each call newly stored ({expected_new} in all; a batch two sessions deliver at once is counted by one of them)"
    compared = (
        f"{len(wrong)} differ in the rollup"
        if got is not None
        else f"not compared (dashboard_data scanned events {scans} times)"
    )
    return Check(
        "rollup-matches-recompute",
        "R2",
        passed,
        measured=(
            f"{len(want):,} (minute, kind) buckets recomputed from events, {compared}; "
            f"{stored} of {expected_new} new events stored, ingest reported {said}"
        ),  # fmt: skip
        threshold=f"dashboard_data reads the rollup; 0 buckets differ; {expected_new} stored and reported",
        fix=fix,
        numbers={"rollup_buckets": len(want), "rollup_mismatches": len(wrong)},
    )


def _rollup_tables(admin, names) -> list[str]:
    """Of ``names``, the ordinary tables (a trigger can go on them)."""
    return [
        name
        for (name,) in admin.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind IN ('r', 'p')"
            " AND relnamespace = 'public'::regnamespace",
            (list(names),),
        )
    ]


_FAIL_FUNCTION = """
CREATE OR REPLACE FUNCTION labkit_fail_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'labkit: the rollup write failed (injected by the acceptance suite)';
END $$"""


def _ingest_with_failing_rollup(state: dict, project, tables: list[str], batch: list[tuple]):
    """Ingest ``batch`` while every write to the rollup tables fails; how many of its events
    were stored anyway (0 when events and rollup change in one transaction)."""
    from psycopg import sql

    admin = state["admin"]
    admin.execute(_FAIL_FUNCTION)
    for table in tables:
        admin.execute(sql.SQL(
            "CREATE TRIGGER labkit_fail BEFORE INSERT OR UPDATE OR DELETE ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION labkit_fail_rollup()").format(sql.Identifier(table)))  # fmt: skip
    try:
        try:
            project.ingest(state["conn"], batch)
        except Exception:  # noqa: BLE001  (the failure was injected: raising is right)
            pass
    finally:
        for table in tables:
            admin.execute(sql.SQL("DROP TRIGGER IF EXISTS labkit_fail ON {}").format(sql.Identifier(table)))  # fmt: skip
    ids = [row[0] for row in batch]
    return admin.execute("SELECT count(*) FROM events WHERE event_id = ANY(%s)", (ids,)).fetchone()[0]  # fmt: skip


@requirement("R2", "rollup-incremental")
def check_incremental(ctx) -> Check:
    from psycopg import sql

    state = _rolled_up(ctx)
    conn, admin, project = state["conn"], state["admin"], ctx.project
    first, last = _span(admin)
    size = ctx.params["ingest_batch"]
    batch = [_event(i, last - timedelta(minutes=50) + timedelta(seconds=k * 15), k)
             for k, i in enumerate(_new_ids(state, size))]  # fmt: skip
    _flush(conn)
    before = _table_stats(admin)
    started = time.perf_counter()
    project.ingest(conn, batch)
    ms = (time.perf_counter() - started) * 1000
    _flush(conn)
    delta = _delta(before, _table_stats(admin))
    writes = {name: d[4] for name, d in delta.items() if name not in _ROLLUP_EXCLUDED and d[4]}
    written = sum(writes.values())
    raw = delta.get("events", (0, 0, 0, 0, 0))
    events_read = raw[2] + raw[3]
    rollup_rows = sum(
        admin.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0]
        for name in writes
    )  # fmt: skip
    distinct = admin.execute(
        "SELECT count(*) FROM (SELECT DISTINCT date_bin('1 minute', occurred_at,"
        " timestamptz '2000-01-01+00'), kind FROM events) AS b"
    ).fetchone()[0]
    start, end = _span(admin)
    got, scans = _through_dashboard(state, project, start, end)
    wrong = _differences(got, _recompute(admin, start, end)) if got is not None else []
    tables = _rollup_tables(admin, writes)
    leaked = None
    if tables:
        doomed = [_event(i, last - timedelta(minutes=20) + timedelta(seconds=k * 15), k)
                  for k, i in enumerate(_new_ids(state, 20))]  # fmt: skip
        leaked = _ingest_with_failing_rollup(state, project, tables, doomed)
    limit, read_limit = 3 * size, 5 * size
    aggregated = rollup_rows <= 1.1 * distinct
    passed = (0 < written <= limit and got is not None and not wrong and events_read <= read_limit
              and aggregated and not leaked)  # fmt: skip
    if written == 0:
        fix = ("ingest wrote no row outside events: keep a rollup table (e.g. events_per_minute) "
               "and update it in ingest, in the same transaction")  # fmt: skip
    elif written > limit:
        fix = (f"ingesting {size} events wrote {written:,} rollup rows ({writes}): update only the "
               "minutes the new events fall in (INSERT ... ON CONFLICT DO UPDATE SET events = "
               "events + excluded.events), never rebuild the rollup")  # fmt: skip
    elif events_read > read_limit:
        fix = (f"ingesting {size} events read {events_read:,} rows of events: a refresh that "
               "recomputes from events (REFRESH MATERIALIZED VIEW, even CONCURRENTLY) costs a "
               "scan per ingest; add the new events to their minutes instead")  # fmt: skip
    elif not aggregated:
        fix = (f"the rollup holds {rollup_rows:,} rows for {distinct:,} (minute, kind) buckets: "
               "one row per event is a copy of events, not a rollup. Keep one row per minute "
               "and kind (PRIMARY KEY (minute, kind)) and add to it")  # fmt: skip
    elif got is None:
        fix = _READS_EVENTS.format(scans)
    elif wrong:
        fix = f"after the ingest the rollup disagrees with the events: {_fail_text(wrong, 2)}"
    else:
        fix = (f"{leaked} of 20 events were stored although the rollup write failed: store the "
               "events and update the rollup in ONE transaction (with conn.transaction(): ...), "
               "so a failure leaves neither")  # fmt: skip
    compared = f"{len(wrong)} buckets differ afterwards" if got is not None else "buckets not compared (dashboard_data reads events)"  # fmt: skip
    return Check(
        "rollup-incremental",
        "R2",
        passed,
        measured=(
            f"ingesting {size} events wrote {written:,} rows of rollup tables "
            f"({', '.join(writes) or 'none'}; {rollup_rows:,} rows live for {distinct:,} "
            f"buckets) and read {events_read:,} rows of events in {ms:.1f} ms; {compared}; "
            + (
                f"with the rollup write failing, {leaked} of 20 events stored"
                if tables
                else "atomicity not tested (no rollup table)"
            )
        ),  # fmt: skip
        threshold=(
            f"1 to {limit:,} rollup rows written (3 per event), <= {read_limit:,} events "
            "rows read, rollup rows <= 1.1 x buckets, 0 buckets differ, 0 events stored "
            "when the rollup write fails"
        ),  # fmt: skip
        fix="" if passed else fix,
        numbers={
            "ingest_ms": round(ms, 1),
            "rollup_rows_written_per_event": round(written / size, 2),
        },
    )


def _dashboard_views(first: datetime, last: datetime) -> list[tuple[str, dict]]:
    six_hours = max(first, last - timedelta(hours=6))
    # a window that starts and ends inside the data, off the hour: [start, end) is exact
    inner_start = first + (last - first) / 3
    inner_start = inner_start.replace(second=0, microsecond=0) + timedelta(minutes=17)
    inner_end = inner_start + timedelta(hours=5, minutes=20)
    return [
        (
            "clicks per hour, a window inside the data off the hour",
            {"start": inner_start, "end": inner_end, "bucket": "hour", "kinds": ["click"]},
        ),
        ("all kinds per hour, whole range", {"start": first, "end": last, "bucket": "hour"}),
        (
            "purchases per minute, last 6 hours",
            {"start": six_hours, "end": last, "bucket": "minute", "kinds": ["purchase"]},
        ),  # fmt: skip
        (
            "views and clicks per day, whole range",
            {"start": first, "end": last, "bucket": "day", "kinds": ["view", "click"]},
        ),  # fmt: skip
    ]


@requirement("R3", "dashboard-reads-rollup")
def check_dashboard(ctx) -> Check:
    state = _rolled_up(ctx)
    conn, admin, project = state["conn"], state["admin"], ctx.project
    first, last = _span(admin)
    views = _dashboard_views(first, last)
    results, medians = {}, {}
    _flush(conn)
    before = _table_stats(admin)
    for label, args in views:
        runs = []
        for _ in range(ctx.params["repeat"]):
            started = time.perf_counter()
            results[label] = project.dashboard_data(conn, args["start"], args["end"],
                                                    kinds=args.get("kinds"), bucket=args["bucket"])  # fmt: skip
            runs.append((time.perf_counter() - started) * 1000)
        medians[label] = statistics.median(runs)
    _flush(conn)
    delta = _delta(before, _table_stats(admin))
    raw = delta.get("events", (0, 0, 0, 0, 0))
    raw_scans, raw_rows = raw[0] + raw[1], raw[2] + raw[3]
    rows_read = sum(d[2] + d[3] for name, d in delta.items() if name != "events")
    steps = {"hour": "1 hour", "minute": "1 minute", "day": "1 day"}
    wrong, recompute_ms = [], []
    for label, args in views:
        started = time.perf_counter()
        want = _recompute(admin, args["start"], args["end"], bucket=steps[args["bucket"]],
                          kinds=args.get("kinds"))  # fmt: skip
        recompute_ms.append((time.perf_counter() - started) * 1000)
        wrong += [f"{label}: {d}" for d in _differences(_buckets(results[label]), want)]
    slowest = max(medians.values())
    limit = ctx.params["dashboard_ms"]
    passed = raw_scans == 0 and not wrong and (limit is None or slowest <= limit)
    if raw_scans:
        fix = (f"the dashboard scanned the raw events table {raw_scans} times ({raw_rows:,} rows): "
               "answer dashboard_data from the rollup (events_per_minute), summing minutes into "
               "hours and days")  # fmt: skip
    elif wrong:
        fix = (f"{len(wrong)} dashboard buckets differ from the events, e.g. {_fail_text(wrong, 2)}: "
               "sum the minutes in [start, end) (minute >= start AND minute < end: filter minutes, "
               "not buckets) into their bucket, and bucket in UTC (date_bin(..., timestamptz "
               "'2000-01-01+00')), not in the session's time zone")  # fmt: skip
    else:
        fix = f"the slowest view took {slowest:.0f} ms: index the rollup on its time column"
    return Check(
        "dashboard-reads-rollup",
        "R3",
        passed,
        measured=(
            f"{len(views)} dashboard views x {ctx.params['repeat']}: {raw_scans} scans of "
            f"events ({raw_rows:,} rows), {rows_read:,} rows read elsewhere; "
            f"{len(wrong)} buckets wrong; slowest median {slowest:.1f} ms (the same view "
            f"recomputed from events: {max(recompute_ms):.1f} ms)"
        ),  # fmt: skip
        threshold=(
            "0 scans of events, 0 buckets wrong"
            + (
                f", every view <= {limit:.0f} ms"
                if limit
                else " (latency held at the default size)"
            )
        ),  # fmt: skip
        fix=fix,
        numbers={
            "dashboard_ms": round(slowest, 1),
            "dashboard_rows_read": rows_read,
            "recompute_ms": round(max(recompute_ms), 1),
        },  # fmt: skip
    )


def _tie_top_buyers(state: dict) -> None:
    """One purchase that makes the two best buyers' revenues equal: top_buyers must then
    order them by user_id (the brief's tie-break), on both engines."""
    admin = state["admin"]
    top = admin.execute(EXPECTED_SQL["top_buyers"]).fetchall()
    if len(top) < 2 or top[0][2] == top[1][2]:
        return
    (event_id,) = _new_ids(state, 1)
    at = admin.execute("SELECT max(occurred_at) - interval '1 hour' FROM events").fetchone()[0]
    admin.execute(
        "INSERT INTO events VALUES (%s, %s, 'purchase', %s, %s)",
        (event_id, at, top[1][0], int(top[0][2] - top[1][2])),
    )


@contextmanager
def _machine_zone(name: str):
    """This process's local time zone set to ``name`` (what DuckDB takes as its default)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def _parquet(ctx) -> dict:
    state = _rolled_up(ctx)
    if "parquet" not in state:
        _tie_top_buyers(state)
        path = ctx.workdir / "events.parquet"
        started = time.perf_counter()
        ctx.project.export_parquet(state["conn"], "events", path)
        state["parquet"] = {"path": path, "seconds": time.perf_counter() - started}
    return state


@requirement("R4", "duckdb-matches-postgres", results=("duckdb-speed",))
def check_duckdb(ctx) -> list[Check]:
    state = _parquet(ctx)
    conn, admin, project = state["conn"], state["admin"], ctx.project
    path = state["parquet"]["path"]
    wrong, pg_runs, duck_runs = [], [], []
    for name, query in EXPECTED_SQL.items():
        want = _normal(admin.execute(query).fetchall())
        for engine, run, runs in (("PostgreSQL", lambda n=name: project.analytics_postgres(conn, n), pg_runs),
                                  ("DuckDB", lambda n=name: project.analytics_duckdb(path, n), duck_runs)):  # fmt: skip
            times = []
            for _ in range(ctx.params["repeat"]):
                started = time.perf_counter()
                with _machine_zone(SESSION_TIME_ZONE):  # a machine whose clock is not UTC
                    got = run()
                times.append((time.perf_counter() - started) * 1000)
            runs.append(statistics.median(times))
            got = _normal(got)
            if got != want:
                extra = [r for r in got if r not in want]
                missing = [r for r in want if r not in got]
                wrong.append(f"{name} on {engine}: {len(got)} rows for {len(want)} expected"
                             + (f", e.g. got {extra[0]}" if extra else "")
                             + (f", e.g. missing {missing[0]}" if missing else ""))  # fmt: skip
    pg_ms, duck_ms = sum(pg_runs), sum(duck_runs)
    ratio = pg_ms / duck_ms if duck_ms else float("inf")
    matches = Check(
        "duckdb-matches-postgres",
        "R4",
        not wrong,
        measured=f"{len(EXPECTED_SQL)} queries x 2 engines: {len(wrong)} answers differ from the expected rows",
        threshold="0 answers differ",
        fix=(
            f"{_fail_text(wrong, 2)}. Days and hours are UTC in both engines (DuckDB takes "
            "the machine's zone unless you SET TimeZone = 'UTC'; the suite runs it on a "
            "machine set to Asia/Kolkata); an hour without purchases is a row of 0, 0 "
            "(generate_series and coalesce), never missing or NULL; equal revenues are "
            "ordered by user_id"
        )
        if wrong
        else "",  # fmt: skip
        numbers={"postgres_ms": round(pg_ms, 1), "duckdb_ms": round(duck_ms, 1)},
    )
    need = ctx.params["min_duckdb_speedup"]
    # deterministic, beside the clock: what each engine has to read for these queries
    pg_bytes = admin.execute("SELECT pg_table_size('events')").fetchone()[0]
    parquet_bytes = Path(path).stat().st_size
    speed = Check(
        "duckdb-speed",
        "R4",
        need is None or ratio >= need,
        measured=(
            f"PostgreSQL {pg_ms:.0f} ms, DuckDB over Parquet {duck_ms:.0f} ms for the "
            f"{len(EXPECTED_SQL)} queries: DuckDB {ratio:.1f}x as fast (wall clock); "
            f"PostgreSQL's events table is {pg_bytes / 1e6:,.1f} MB of whole rows, the Parquet "
            f"file {parquet_bytes / 1e6:,.1f} MB of compressed columns, of which DuckDB reads "
            "only the columns a query names"
        ),  # fmt: skip
        threshold=f">= {need:.0f}x" if need else "measured (held at the default size)",
        fix="query the Parquet file with DuckDB directly (read_parquet), not through pandas",
        numbers={
            "duckdb_speedup": round(ratio, 2),
            "events_table_mb": round(pg_bytes / 1e6, 1),
            "parquet_mb": round(parquet_bytes / 1e6, 1),
        },  # fmt: skip
    )
    return [matches, speed]


def _arrow_kind(t) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return "timestamp with a time zone" if t.tz else "timestamp WITHOUT a time zone"
    if pa.types.is_dictionary(t):
        return _arrow_kind(t.value_type)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    ):
        return "string"
    return str(t)


@requirement("R5", "export-roundtrip")
def check_export(ctx) -> Check:
    import duckdb
    import pyarrow.parquet as pq
    from psycopg import sql

    state = _parquet(ctx)
    conn, admin, project = state["conn"], state["admin"], ctx.project
    path = state["parquet"]["path"]
    problems = []
    schema = pq.read_schema(path)
    types = {name: _arrow_kind(schema.field(name).type) for name in schema.names}
    for column, want in EXPECTED_TYPES.items():
        if types.get(column) != want:
            problems.append(
                f"Parquet column {column} is {types.get(column, 'missing')}, not {want}"
            )
    want_print = tuple(
        int(v or 0) for v in admin.execute(_FINGERPRINT_PG.format("events")).fetchone()
    )
    if not problems:
        with duckdb.connect() as duck:
            got = tuple(
                int(v or 0) for v in duck.execute(_FINGERPRINT_DUCK, [str(path)]).fetchone()
            )
        if got != want_print:
            problems.append(f"Parquet rows differ ({FINGERPRINT}): {got} for {want_print}")
    csv_path = ctx.workdir / "events.csv"
    started = time.perf_counter()
    project.export_csv(conn, "events", csv_path)
    csv_seconds = time.perf_counter() - started
    admin.execute("DROP TABLE IF EXISTS events_roundtrip")
    admin.execute("CREATE TABLE events_roundtrip (LIKE events)")
    reader = state["db"].connect(autocommit=True, options=f"-c TimeZone={RELOAD_TIME_ZONE}")
    try:
        with (
            reader,
            open(csv_path, "rb") as source,
            reader.cursor().copy(
                "COPY events_roundtrip FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy,
        ):
            while block := source.read(1 << 20):
                copy.write(block)
    except Exception as exc:  # a malformed file is the learner's to fix: say what it was
        problems.append(
            f"the CSV does not load back into a table like events: {str(exc).splitlines()[0]}"
        )
    else:
        back = tuple(int(v or 0) for v in admin.execute(
            sql.SQL(_FINGERPRINT_PG).format(sql.Identifier("events_roundtrip"))).fetchone())  # fmt: skip
        if back != want_print:
            problems.append(
                f"CSV rows differ once loaded back ({FINGERPRINT}): {back} for {want_print}"
            )
    admin.execute("DROP TABLE IF EXISTS events_roundtrip")
    problems += _probe_exports(ctx, state)
    return Check(
        "export-roundtrip",
        "R5",
        not problems,
        measured=(
            f"Parquet types {types}; CSV and Parquet read back "
            + (
                "equal to events"
                if not problems
                else f"with {len(problems)} problems: {_fail_text(problems)}"
            )
        ),  # fmt: skip
        threshold="Parquet: int64/int32 kept (no floats), timestamps with a time zone; both files equal to events",
        fix=(
            "take each Parquet column's type from PostgreSQL's (integer -> int32 even with NULLs, "
            "timestamptz -> timestamp[us, tz=UTC]); write CSV with COPY ... TO STDOUT (FORMAT csv, "
            "HEADER true) so NULL stays NULL, '' stays '', and timestamps keep their offset "
            "(the suite loads the CSV back in a session set to America/Los_Angeles)"
        )
        if problems
        else "",  # fmt: skip
        numbers={
            "parquet_export_s": round(state["parquet"]["seconds"], 2),
            "csv_export_s": round(csv_seconds, 2),
        },  # fmt: skip
    )


def _probe_exports(ctx, state: dict) -> list[str]:
    """Export a small table of awkward values with the learner's functions and read both
    files back: a list of what came back different."""
    import pyarrow.parquet as pq

    admin, conn, project = state["admin"], state["conn"], ctx.project
    admin.execute("DROP TABLE IF EXISTS export_probe, probe_back")
    admin.execute(
        "CREATE TABLE export_probe (id integer, note text, at timestamptz, delta integer)"
    )
    with admin.cursor() as cursor:
        cursor.executemany("INSERT INTO export_probe VALUES (%s, %s, %s, %s)", PROBE_ROWS)
    problems = []
    csv_path, parquet_path = ctx.workdir / "probe.csv", ctx.workdir / "probe.parquet"
    project.export_csv(conn, "export_probe", csv_path)
    admin.execute("CREATE TABLE probe_back (LIKE export_probe)")
    reader = state["db"].connect(autocommit=True, options=f"-c TimeZone={RELOAD_TIME_ZONE}")
    try:
        with (
            reader,
            open(csv_path, "rb") as source,
            reader.cursor().copy("COPY probe_back FROM STDIN (FORMAT csv, HEADER true)") as copy,
        ):
            copy.write(source.read())
    except Exception as exc:  # noqa: BLE001  (a malformed file: say what it was)
        problems.append(f"the probe table's CSV does not load back: {str(exc).splitlines()[0]}")
    else:
        back = [tuple(r) for r in admin.execute("SELECT * FROM probe_back ORDER BY id")]
        for want, got in zip(PROBE_ROWS, back, strict=False):
            if _normal([want]) != _normal([got]):
                problems.append(f"CSV of a table with {want!r} loads back as {got!r}")
                break
        if len(back) != len(PROBE_ROWS):
            problems.append(
                f"the probe table's CSV loads back {len(back)} rows of {len(PROBE_ROWS)}"
            )
    admin.execute("DROP TABLE IF EXISTS probe_back")
    project.export_parquet(conn, "export_probe", parquet_path)
    table = pq.read_table(parquet_path)
    got = sorted((tuple(r.values()) for r in table.to_pylist()), key=lambda r: r[0])
    for want, row in zip(PROBE_ROWS, got, strict=False):
        if _normal([want]) != _normal([row]):
            problems.append(f"Parquet of a table with {want!r} reads back as {row!r}")
            break
    admin.execute("DROP TABLE IF EXISTS export_probe")
    return problems


def dataset_path() -> Path:
    try:
        from labkit import datasets  # type: ignore[attr-defined]

        return Path(datasets.path(DATASET))
    except ImportError:
        from labkit import config

        return config.project_root() / "data" / DATASET


def expected_temperatures(path: Path) -> list[tuple[datetime, float]]:
    """Each reading of the file: its UTC instant and its temperature. The file's clock is
    UTC-8 all year (the provenance notes in data/README.md): 2010-03-14 02:00 is there and
    03:00 is not, 2010-11-07 01:00 appears once, so no daylight saving time is applied."""
    zone = timezone(DATASET_OFFSET)
    out = []
    with open(path, newline="") as source:
        for row in csv.DictReader(source):
            local = datetime.strptime(row["date"], "%Y/%m/%d %H:%M").replace(tzinfo=zone)
            out.append((local.astimezone(UTC), float(row["temp"])))
    return out


@requirement("R6", "real-data-timezones")
def check_temperatures(ctx) -> Check:
    state = _database(ctx)
    path = dataset_path()
    if not path.is_file():
        return Check("real-data-timezones", "R6", False, measured=f"{path} is missing",
                     threshold="the dataset is there", fix="restore data/seattle-temps.csv (git checkout data/)")  # fmt: skip
    ctx.project.load_temperatures(state["conn"], path)
    rows = state["admin"].execute("SELECT observed_at, temp_f FROM temperatures").fetchall()
    got = Counter((at.astimezone(UTC), round(float(t), 4)) for at, t in rows)
    wrong, expected = [], expected_temperatures(path)
    for instant, temp in expected:
        if got[(instant, round(temp, 4))] > 0:
            got[(instant, round(temp, 4))] -= 1
        else:
            wrong.append(f"{instant:%Y-%m-%d %H:%M} UTC ({temp} F)")
    passed = not wrong and len(rows) == len(expected)
    return Check(
        "real-data-timezones",
        "R6",
        passed,
        measured=f"{len(rows):,} readings loaded for {len(expected):,} in the file; {len(wrong):,} not at their instant",
        threshold=f"{len(expected):,} readings, each at its UTC instant",
        fix=(
            f"e.g. expected {_fail_text(wrong, 2)}: read the file's provenance notes "
            "(data/README.md): its clock is UTC-8 all year, without daylight saving time. "
            "Convert with AT TIME ZONE INTERVAL '-08:00' (not 'America/Los_Angeles', not the "
            "session's zone, not UTC; 'Etc/GMT+8' also works: POSIX names flip the sign)"
        )
        if not passed
        else "",  # fmt: skip
        numbers={"temperature_readings": len(rows)},
    )


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


@requirement("R7", "dashboard-widget")
def check_widget(ctx) -> Check:
    import ipywidgets as widgets

    state = _rolled_up(ctx)
    conn, admin = state["conn"], state["admin"]
    _flush(conn)
    before = _table_stats(admin)
    module = sys.modules.get(getattr(ctx.project.dashboard, "__module__", ""))
    calls: list[tuple] = []
    original = getattr(module, "dashboard_data", None)
    if callable(original):

        def recorded(*args, **kwargs):
            rows = original(*args, **kwargs)
            calls.append((args[1:], sorted(kwargs.items()), _normal(rows)))
            return rows

        module.dashboard_data = recorded
        ctx.on_close(lambda: setattr(module, "dashboard_data", original))
    view = ctx.project.dashboard(conn)
    found = list(_walk(view)) if isinstance(view, widgets.Widget) else []
    images = [w for w in found if isinstance(w, widgets.Image)]
    passive = (widgets.Image, widgets.HTML, widgets.Label, widgets.HTMLMath, widgets.Output)
    controls = [
        w for w in found if isinstance(w, widgets.ValueWidget) and not isinstance(w, passive)
    ]
    picture = lambda: b"".join(bytes(i.value or b"") for i in images)  # noqa: E731
    changed, problems = 0, []
    shown = picture()
    if not shown.startswith(b"\x89PNG"):
        problems.append("no PNG plot in an Image widget after the dashboard opened")
    for control in controls:
        options = list(getattr(control, "options", ()) or ())
        if options:
            labels = [o[1] if isinstance(o, tuple) else o for o in options]
            new = next((o for o in reversed(labels) if o != control.value), control.value)
        elif isinstance(control.value, tuple):
            low, high = control.min, control.max
            new = (
                (low, low + max(1, (high - low) // 3))
                if tuple(control.value) != (low, low + max(1, (high - low) // 3))
                else (low, high)
            )
        elif isinstance(control.value, bool):
            new = not control.value
        elif hasattr(control, "min"):
            new = control.min if control.value != control.min else control.max
        else:
            continue
        asked = len(calls)
        control.value = new
        now = picture()
        label = control.description or type(control).__name__
        if now == shown:
            problems.append(f"changing {label} did not redraw the plot")
        elif callable(original) and (len(calls) == asked or asked == 0
                                     or calls[-1][:2] == calls[asked - 1][:2]
                                     or calls[-1][2] == calls[asked - 1][2]):  # fmt: skip
            problems.append(
                f"changing {label} redrew the plot without asking dashboard_data for other "
                "rows (a new title is not a new view)"
            )
        else:
            changed += 1
        shown = now
    _flush(conn)
    delta = _delta(before, _table_stats(admin)).get("events", (0, 0, 0, 0, 0))
    raw_scans = delta[0] + delta[1]
    if len(controls) < 2:
        problems.append(f"{len(controls)} controls (at least 2: e.g. kind and time window)")
    if raw_scans:
        problems.append(f"the widget scanned the raw events table {raw_scans} times")
    return Check(
        "dashboard-widget",
        "R7",
        not problems,
        measured=f"{len(controls)} controls, {len(images)} plots; {changed} of {len(controls)} controls redraw the plot; {raw_scans} scans of events",
        threshold=(
            ">= 2 controls, each redraws a matplotlib plot with other rows from "
            "dashboard_data; 0 scans of events"
        ),  # fmt: skip
        fix=(
            _fail_text(problems) + ". Build it as labkit.controls.live does: controls whose "
            "change sets an Image widget's value to the PNG of a matplotlib figure drawn from "
            "dashboard_data"
        )
        if problems
        else "",  # fmt: skip
        numbers={"dashboard_controls": len(controls)},
    )


CHECKS = [
    check_load,
    check_rollup,
    check_incremental,
    check_dashboard,
    check_duckdb,
    check_export,
    check_temperatures,
    check_widget,
]
