"""Usage metering per tenant (statements, rows, storage), the admin table, and one tenant's
data exported to files.

**Statements and rows** are counted where every statement passes: a SQLAlchemy
``after_cursor_execute`` event. The tenant travels with the work as an execution option
(``engine.execution_options(tenant_id=7)``), so the listener reads it from the execution
context; statements without one (migrations, the meter's own writes) are not billed.
:class:`UsageMeter` keeps the counts in memory per tenant and hour (the event runs inside
every statement: it must not write to the database) and :meth:`UsageMeter.flush` adds
them to the ``usage`` table in one transaction. A third counter, ``statement_ms``
(statement time, the resource a noisy tenant uses up), is filled by callers that time
their statements, such as :class:`labkit.isolation.Gateway`.

**Storage** is measured from the rows: :func:`storage_by_tenant` sums
``pg_column_size(t.*)`` (the row's header and data) of each tenant's rows in every table
that has a ``tenant_id`` column. A compressed value, inline or TOASTed out of line, counts
at its compressed size: the whole-row value fetches an out-of-line value without
decompressing it (``tests/test_metering.py`` checks this on a TOASTed text). No page
overhead, no indexes. It reads every row of every tenant table on each snapshot (a full
scan): hourly, not per request. :func:`record_storage` stores the totals as the hour's
``storage_bytes``.

>>> from labkit import db
>>> demo = db.fresh_database("s12b_doctest_metering")
>>> with demo.connect(autocommit=True) as conn:
...     create_usage_table(conn)
...     meter = UsageMeter()
...     meter.add(1, queries=3, rows=30); meter.add(2, queries=1, rows=5); meter.add(1, queries=1, rows=2)
...     flushed = meter.flush(conn)
...     totals = conn.execute(
...         "SELECT tenant_id, metric, sum(value)::int FROM usage GROUP BY 1, 2 ORDER BY 1, 2"
...     ).fetchall()
>>> flushed, totals
(4, [(1, 'queries', 4), (1, 'rows', 32), (2, 'queries', 1), (2, 'rows', 5)])
>>> db.drop_database("s12b_doctest_metering")

**The admin table** (:func:`admin_table`) joins ``tenants`` and ``plans`` (see
:func:`labkit.isolation.load_demo`) with the usage. **The export**
(:func:`export_tenant`) writes one CSV per tenant table with ``COPY (SELECT ... WHERE
tenant_id = %s) TO STDOUT``, all in one ``REPEATABLE READ, READ ONLY`` transaction so
every file shows the same snapshot. ``COPY`` takes no server-side parameters: psycopg
merges the id into the statement text on the client, quoted as a literal; the id is
checked to be an int first and the table name is a quoted identifier, so neither can
change the statement.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ExportedFile",
    "USAGE_PER_HOUR",
    "UsageMeter",
    "admin_table",
    "create_usage_table",
    "export_tenant",
    "human_bytes",
    "record_storage",
    "storage_by_tenant",
    "tenant_tables",
    "usage_per_hour",
]

USAGE_DDL = """
CREATE TABLE IF NOT EXISTS usage (
    tenant_id int NOT NULL,
    hour timestamptz NOT NULL,
    metric text NOT NULL CHECK (metric IN ('queries', 'rows', 'statement_ms', 'storage_bytes')),
    value bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (tenant_id, hour, metric)
)
"""

#: Usage per tenant per hour: counters summed, storage as the hour's snapshot.
USAGE_PER_HOUR = """
SELECT tenant_id, hour,
       coalesce(sum(value) FILTER (WHERE metric = 'queries'), 0)::bigint AS queries,
       coalesce(sum(value) FILTER (WHERE metric = 'rows'), 0)::bigint AS rows,
       coalesce(sum(value) FILTER (WHERE metric = 'statement_ms'), 0)::bigint AS statement_ms,
       max(value) FILTER (WHERE metric = 'storage_bytes') AS storage_bytes
FROM usage
GROUP BY tenant_id, hour
ORDER BY tenant_id, hour
"""


def create_usage_table(conn: Any) -> None:
    """Create the ``usage`` table if it does not exist (psycopg connection)."""
    conn.execute(USAGE_DDL)


def _hour(at: datetime | None = None) -> datetime:
    at = at or datetime.now(UTC)
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _zero() -> dict[str, float]:
    return {"queries": 0, "rows": 0, "statement_ms": 0.0}


class UsageMeter:
    """Statement, row and statement-time counts per (tenant, hour), in memory until
    :meth:`flush`.

    Thread-safe: many connections on many threads report into one meter."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, datetime], dict[str, float]] = defaultdict(_zero)
        self._lock = threading.Lock()
        self._listening: list[Any] = []

    def add(
        self,
        tenant_id: int,
        *,
        queries: int = 0,
        rows: int = 0,
        statement_ms: float = 0.0,
        at: datetime | None = None,
    ) -> None:
        """Count ``queries`` statements, ``rows`` rows and ``statement_ms`` ms of statement
        time for the tenant in ``at``'s hour."""
        if isinstance(tenant_id, bool) or not isinstance(tenant_id, int):
            raise ValueError(f"tenant_id must be an int, not {tenant_id!r}: pass the tenant's id")
        if queries < 0 or rows < 0 or statement_ms < 0:
            raise ValueError("queries, rows and statement_ms are counts: they cannot be negative")
        with self._lock:
            counts = self._counts[(tenant_id, _hour(at))]
            counts["queries"] += queries
            counts["rows"] += rows
            counts["statement_ms"] += statement_ms

    def on_cursor_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:
        """The ``after_cursor_execute`` listener: bill the statement to the execution
        option ``tenant_id``, if there is one; rows are the cursor's ``rowcount``
        (rows returned by a SELECT, rows changed by INSERT/UPDATE/DELETE)."""
        tenant = context.execution_options.get("tenant_id") if context is not None else None
        if tenant is not None:
            self.add(tenant, queries=1, rows=max(cursor.rowcount, 0))

    def attach(self, engine: Any) -> UsageMeter:
        """Listen on ``engine`` (and every engine made from it with ``execution_options``)."""
        from sqlalchemy import event

        event.listen(engine, "after_cursor_execute", self.on_cursor_execute)
        self._listening.append(engine)
        return self

    def detach(self) -> None:
        from sqlalchemy import event

        for engine in self._listening:
            event.remove(engine, "after_cursor_execute", self.on_cursor_execute)
        self._listening.clear()

    def pending(self, *, timed: bool = False) -> dict[int, dict[str, float]]:
        """Counts not flushed yet, per tenant (all hours summed): queries and rows, and
        ``statement_ms`` too if ``timed``."""
        totals: dict[int, dict[str, float]] = defaultdict(_zero)
        with self._lock:
            for (tenant, _), counts in self._counts.items():
                for metric, value in counts.items():
                    totals[tenant][metric] += value
        if not timed:
            for counts in totals.values():
                del counts["statement_ms"]
        return dict(totals)

    def flush(self, conn: Any) -> int:
        """Add the pending counts to ``usage`` (one transaction on the psycopg connection
        ``conn``, autocommit: the transaction is the flush's own) and forget them; returns the rows written. If the write fails the
        counts are kept for the next flush."""
        with self._lock:
            taken, self._counts = self._counts, defaultdict(_zero)
        rows = [
            (tenant, hour, metric, round(value))
            for (tenant, hour), counts in sorted(taken.items())
            for metric, value in counts.items()
            if round(value)
        ]
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO usage (tenant_id, hour, metric, value) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (tenant_id, hour, metric) DO UPDATE SET value = usage.value + EXCLUDED.value",
                    rows,
                )
        except BaseException:
            with self._lock:
                for key, counts in taken.items():
                    for metric, value in counts.items():
                        self._counts[key][metric] += value
            raise
        return len(rows)


# --------------------------------------------------------------------------- storage


def tenant_tables(conn: Any, *, schema: str = "public", exclude: Sequence[str] = ()) -> list[str]:
    """The tables of ``schema`` that have a ``tenant_id`` column, found in the catalog."""
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = %s AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE' "
        "ORDER BY c.table_name",
        (schema,),
    ).fetchall()
    return [name for (name,) in rows if name not in exclude]


def storage_by_tenant(
    conn: Any, *, tables: Sequence[str] | None = None, schema: str = "public"
) -> dict[int, dict[str, int]]:
    """Bytes of row data per tenant and table: ``sum(pg_column_size(t.*))`` per
    ``tenant_id``, headers included, compressed values (TOASTed too) at their compressed
    size; no pages or indexes. Default tables: every one with a ``tenant_id`` column but
    ``usage``. Each call scans every row of those tables."""
    from psycopg import sql

    tables = (
        list(tables)
        if tables is not None
        else tenant_tables(conn, schema=schema, exclude=("usage",))
    )
    result: dict[int, dict[str, int]] = defaultdict(dict)
    for table in tables:
        query = sql.SQL(
            "SELECT tenant_id, sum(pg_column_size(t.*))::bigint FROM {} AS t GROUP BY tenant_id"
        ).format(sql.Identifier(schema, table))
        for tenant, size in conn.execute(query).fetchall():
            result[tenant][table] = int(size)
    return dict(result)


def record_storage(conn: Any, *, at: datetime | None = None, **kwargs: Any) -> dict[int, int]:
    """Store each tenant's total :func:`storage_by_tenant` as the hour's ``storage_bytes``
    (a snapshot: a second call in the same hour replaces it). Returns the totals."""
    totals = {
        tenant: sum(sizes.values()) for tenant, sizes in storage_by_tenant(conn, **kwargs).items()
    }
    hour = _hour(at)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO usage (tenant_id, hour, metric, value) VALUES (%s, %s, 'storage_bytes', %s) "
            "ON CONFLICT (tenant_id, hour, metric) DO UPDATE SET value = EXCLUDED.value",
            [(tenant, hour, size) for tenant, size in sorted(totals.items())],
        )
    return totals


def usage_per_hour(conn: Any):
    """:data:`USAGE_PER_HOUR` as a pandas DataFrame."""
    import pandas as pd

    cur = conn.execute(USAGE_PER_HOUR)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def human_bytes(size: float | None) -> str:
    """``1536`` → ``'1.5 kB'`` (powers of 1024, as PostgreSQL's ``pg_size_pretty``)."""
    if size is None or size != size:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


ADMIN_QUERY = """
SELECT t.id AS tenant, t.name, t.plan, p.statement_timeout_ms AS timeout_ms,
       p.max_concurrent, p.reports_per_s,
       coalesce(sum(u.value) FILTER (WHERE u.metric = 'queries'), 0)::bigint AS queries,
       coalesce(sum(u.value) FILTER (WHERE u.metric = 'rows'), 0)::bigint AS rows,
       coalesce(sum(u.value) FILTER (WHERE u.metric = 'statement_ms'), 0)::bigint
           AS statement_ms,
       (SELECT s.value FROM usage s WHERE s.tenant_id = t.id AND s.metric = 'storage_bytes'
        ORDER BY s.hour DESC LIMIT 1) AS storage_bytes
FROM tenants t
JOIN plans p ON p.name = t.plan
LEFT JOIN usage u ON u.tenant_id = t.id
GROUP BY t.id, p.name
ORDER BY t.id
"""


def admin_table(conn: Any):
    """Every tenant with its plan's limits and its usage (queries, rows and statement ms
    summed over all hours, the latest storage snapshot), as a pandas DataFrame indexed by
    tenant."""
    import pandas as pd

    cur = conn.execute(ADMIN_QUERY)
    frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description]).set_index(
        "tenant"
    )
    frame["storage"] = [human_bytes(v) for v in frame["storage_bytes"]]
    return frame


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportedFile:
    """One exported table: where the file is and how many rows PostgreSQL copied into it."""

    table: str
    path: Path
    rows: int

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def export_tenant(
    conn: Any,
    tenant_id: int,
    folder: str | Path,
    *,
    tables: Sequence[str] | None = None,
    schema: str = "public",
    after_table: Callable[[ExportedFile], None] | None = None,
) -> list[ExportedFile]:
    """Write one CSV (with a header) per table for ``tenant_id`` into ``folder``, with
    ``COPY (SELECT * FROM <table> WHERE tenant_id = %s ORDER BY ...) TO STDOUT``.

    Every COPY runs in one ``REPEATABLE READ, READ ONLY`` transaction: the files share one
    snapshot, so a write committed during the export shows in none of them. ``conn`` (a
    psycopg connection) must not be inside a transaction; its isolation level and
    read-only setting are restored after. COPY takes no server-side parameters: psycopg
    merges ``tenant_id`` into the statement on the client as a quoted literal, after it
    is checked to be an int; the table name is a quoted identifier.

    Default tables: every table of ``schema`` with a ``tenant_id`` column (the catalog
    decides, so a new table is not forgotten). ``rows`` is PostgreSQL's own count of
    copied rows. ``after_table``, if given, is called with each file once written
    (progress, or a test's concurrent write)."""
    from psycopg import IsolationLevel, pq, sql

    if isinstance(tenant_id, bool) or not isinstance(tenant_id, int):
        raise ValueError(f"tenant_id must be an int, not {tenant_id!r}: pass the tenant's id")
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError(
            "export_tenant needs a connection outside a transaction (commit or roll back "
            "first): it opens its own REPEATABLE READ, READ ONLY transaction"
        )
    folder = Path(folder)
    exported = []
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone() is None:
                raise ValueError(
                    f"no tenant {tenant_id} in the tenants table: check the id (see admin_table)"
                )
            tables = list(tables) if tables is not None else tenant_tables(conn, schema=schema)
            folder.mkdir(parents=True, exist_ok=True)
            for table in tables:
                statement = sql.SQL(
                    "COPY (SELECT * FROM {} WHERE tenant_id = %s ORDER BY 1, 2) "
                    "TO STDOUT WITH (FORMAT csv, HEADER true)"
                ).format(sql.Identifier(schema, table))
                path = folder / f"{table}.csv"
                with conn.cursor() as cur, path.open("wb") as out:
                    with cur.copy(statement, (tenant_id,)) as copy:
                        for chunk in copy:
                            out.write(chunk)
                    exported.append(ExportedFile(table, path, cur.rowcount))
                if after_table is not None:
                    after_table(exported[-1])
    finally:
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            conn.isolation_level, conn.read_only = saved
    return exported
